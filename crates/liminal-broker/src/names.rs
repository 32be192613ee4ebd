//! Validation of client-supplied names.

/// Longest channel or subject name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a channel name: 1 to 255 bytes, no whitespace or control characters.
pub fn validate_channel_name(name: &str) -> Result<(), String> {
    validate_name("channel", name)
}

/// Checks a conversation subject with the same rules as channel names.
pub fn validate_subject(name: &str) -> Result<(), String> {
    validate_name("subject", name)
}

/// Checks a durable consumer name with the same rules as channel names.
pub fn validate_consumer_name(name: &str) -> Result<(), String> {
    validate_name("consumer", name)
}

fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} name is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{kind} name of {} bytes is longer than the maximum of {MAX_NAME_BYTES} bytes",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{kind} name {name:?} contains the invalid character {bad:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_validated() {
        assert!(validate_channel_name("orders.eu-1").is_ok());
        assert!(validate_channel_name("").is_err());
        assert!(validate_channel_name("a b").is_err());
        assert!(validate_channel_name(&"x".repeat(256)).is_err());
    }
}
