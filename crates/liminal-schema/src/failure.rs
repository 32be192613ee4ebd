//! Reasons a payload was rejected, worded for an Error frame sent back to the publisher.

use std::fmt;
use std::sync::Arc;

/// Max number of violations a [`ValidationFailure::Invalid`] lists. The total count covers all.
pub const MAX_REPORTED_VIOLATIONS: usize = 5;

/// Max characters kept in [`Violation::reason`]. jsonschema quotes the offending value in its
/// messages, so a long string in the payload would otherwise be copied into the error frame.
pub const MAX_REASON_CHARS: usize = 200;

/// Hex digits of the schema id shown in messages. The full id is in
/// [`ValidationFailure::Invalid::schema_id`].
const SHOWN_ID_HEX_DIGITS: usize = 12;

/// One way in which a payload breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer (RFC 6901) to the offending value in the payload. The root is `""`, as the RFC
    /// defines it, and messages show it as `(root)` because `/` would point at the key `""`.
    pub instance_path: String,
    /// JSON Pointer to the failing keyword in the schema, such as `/properties/price/minimum`.
    pub schema_path: String,
    /// Failing schema keyword, such as `minimum` or `required`.
    pub keyword: String,
    /// Message from the validator, cut to [`MAX_REASON_CHARS`] characters with a trailing `…`.
    pub reason: String,
}

impl Violation {
    /// Converts a jsonschema error, cutting its message to [`MAX_REASON_CHARS`].
    pub(crate) fn from_error(error: &jsonschema::ValidationError<'_>) -> Violation {
        Violation {
            instance_path: error.instance_path().as_str().to_owned(),
            schema_path: error.schema_path().as_str().to_owned(),
            keyword: error.kind().keyword().to_owned(),
            reason: truncate_chars(&error.to_string(), MAX_REASON_CHARS),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.instance_path.is_empty() {
            write!(f, "(root): {}", self.reason)
        } else {
            write!(f, "{}: {}", self.instance_path, self.reason)
        }
    }
}

/// Reason [`crate::ChannelSchema::validate`] rejected a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationFailure {
    /// The payload is larger than [`crate::SchemaLimits::max_payload_bytes`]. Checked first, before
    /// any byte is decoded.
    #[error("payload is {size} bytes, over the schema check limit of {limit} bytes")]
    TooLarge {
        /// Payload size in bytes.
        size: usize,
        /// Limit in bytes.
        limit: usize,
    },
    /// The payload is not valid UTF-8.
    #[error("payload is not valid UTF-8: invalid byte sequence at byte offset {valid_up_to}")]
    NotUtf8 {
        /// Length of the longest valid UTF-8 prefix, which is the offset of the first bad byte.
        valid_up_to: usize,
    },
    /// The payload is UTF-8 but not valid JSON. Numbers beyond the `f64` range, such as `1e400` or
    /// a 400-digit integer, land here with the reason `number out of range`.
    #[error("payload is not valid JSON at line {line}, column {column}: {reason}")]
    NotJson {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// Parser message, without the position.
        reason: String,
    },
    /// The payload nests arrays and objects deeper than the enforced limit.
    #[error("payload nests arrays and objects deeper than the limit of {limit} levels")]
    TooDeep {
        /// Depth limit that was enforced, see [`crate::SchemaLimits::effective_payload_depth`].
        limit: usize,
    },
    /// The payload is JSON but breaks the schema.
    #[error(
        "payload does not match schema {}: {}",
        shorten_schema_id(.schema_id),
        list_violations(.violations, *.total)
    )]
    Invalid {
        /// Full id of the schema, as returned by [`crate::ChannelSchema::id`].
        schema_id: Arc<str>,
        /// The first [`MAX_REPORTED_VIOLATIONS`] violations, in the validator's order.
        violations: Vec<Violation>,
        /// Number of violations found, at least `violations.len()`.
        total: usize,
    },
}

impl ValidationFailure {
    /// Returns a short fixed name of the failure kind, for log fields and metrics labels.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ValidationFailure::TooLarge { .. } => "too_large",
            ValidationFailure::NotUtf8 { .. } => "not_utf8",
            ValidationFailure::NotJson { .. } => "not_json",
            ValidationFailure::TooDeep { .. } => "too_deep",
            ValidationFailure::Invalid { .. } => "invalid",
        }
    }
}

/// Shortens `sha256:<64 hex digits>` to `sha256:<12 hex digits>…` for messages.
fn shorten_schema_id(schema_id: &str) -> String {
    match schema_id.split_once(':') {
        Some((algorithm, digest)) if digest.len() > SHOWN_ID_HEX_DIGITS => {
            format!("{algorithm}:{}…", &digest[..SHOWN_ID_HEX_DIGITS])
        }
        _ => schema_id.to_owned(),
    }
}

/// Joins violations with `; ` and appends how many were left out.
fn list_violations(violations: &[Violation], total: usize) -> String {
    let mut text = violations
        .iter()
        .map(Violation::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let omitted = total.saturating_sub(violations.len());
    if omitted > 0 {
        text.push_str(&format!("; and {omitted} more"));
    }
    text
}

/// Returns `text` cut to at most `max_chars` characters, ending in `…` when cut.
fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let mut shortened = text[..cut].to_owned();
            shortened.pop();
            shortened.push('…');
            shortened
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(instance_path: &str, reason: &str) -> Violation {
        Violation {
            instance_path: instance_path.to_owned(),
            schema_path: String::new(),
            keyword: String::new(),
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn truncate_keeps_short_text() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("", 3), "");
    }

    #[test]
    fn truncate_cuts_on_char_boundary() {
        assert_eq!(truncate_chars("abcd", 3), "ab…");
        assert_eq!(truncate_chars("ééééé", 4), "ééé…");
        assert_eq!(truncate_chars("ééééé", 4).chars().count(), 4);
    }

    #[test]
    fn schema_id_shortened_in_messages() {
        let id = format!("sha256:{}", "ab12".repeat(16));
        assert_eq!(shorten_schema_id(&id), "sha256:ab12ab12ab12…");
        assert_eq!(shorten_schema_id("custom"), "custom");
    }

    #[test]
    fn invalid_display_lists_violations() {
        let failure = ValidationFailure::Invalid {
            schema_id: Arc::from(format!("sha256:{}", "0".repeat(64))),
            violations: vec![
                violation("/price", "-3 is less than the minimum of 0"),
                violation("", "\"sku\" is a required property"),
            ],
            total: 4,
        };
        assert_eq!(
            failure.to_string(),
            "payload does not match schema sha256:000000000000…: \
             /price: -3 is less than the minimum of 0; \
             (root): \"sku\" is a required property; and 2 more"
        );
    }
}
