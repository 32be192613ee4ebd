//! Token authentication.

use subtle::ConstantTimeEq;

/// Compares tokens in time independent of where they first differ, so a
/// client cannot learn the token byte by byte from response timing. The
/// length comparison is not constant-time, which reveals only the length.
pub fn tokens_match(expected: &str, presented: &str) -> bool {
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::tokens_match;

    #[test]
    fn tokens_compared_exactly() {
        assert!(tokens_match("s3cret", "s3cret"));
        assert!(!tokens_match("s3cret", "s3creT"));
        assert!(!tokens_match("s3cret", ""));
        assert!(!tokens_match("s3cret", "s3cret-longer"));
    }
}
