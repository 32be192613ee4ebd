//! Umbrella package of the Liminal workspace: it owns the `liminal-server`
//! and `liminal` binaries, the examples and the black-box test suite, and
//! re-exports the crates an embedding application needs.

pub use liminal_broker as broker;
pub use liminal_client as client;
pub use liminal_server as server;

/// Formats an error with its chain of causes for a one-line message on
/// stderr. A cause whose text the message already contains is left out,
/// because several errors quote their source in their own text.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_skips_quoted_causes() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let error = anyhow::Error::new(source).context("cannot read config file x.toml: No such file");
        assert_eq!(error_line(&error), "cannot read config file x.toml: No such file");

        let error = anyhow::anyhow!("disk full").context("write failed");
        assert_eq!(error_line(&error), "write failed: disk full");
    }
}
