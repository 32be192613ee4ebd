//! Bounded parsing of JSON text from schema files and payloads.

use crate::depth::text_exceeds_depth;
use serde_json::Value;

/// Reason JSON text was not parsed.
#[derive(Debug)]
pub(crate) enum JsonTextError {
    /// Arrays and objects nest deeper than the limit.
    TooDeep { limit: usize },
    /// The text is not valid JSON. `line` and `column` are 1-based, as serde_json reports them.
    NotJson {
        line: usize,
        column: usize,
        reason: String,
    },
}

/// Parses `text` after checking that it nests no deeper than `depth_limit`.
///
/// The depth check runs first and without recursion, so text nested thousands of levels deep is
/// rejected in one linear scan and never reaches the recursive parser. `depth_limit` must be at
/// most [`crate::SERDE_JSON_MAX_DEPTH`], or the parser's own limit fires first and is reported as
/// [`JsonTextError::NotJson`].
pub(crate) fn parse_bounded(text: &[u8], depth_limit: usize) -> Result<Value, JsonTextError> {
    if text_exceeds_depth(text, depth_limit) {
        return Err(JsonTextError::TooDeep { limit: depth_limit });
    }
    serde_json::from_slice(text).map_err(|error| not_json(&error))
}

/// Splits a serde_json error into its position and its message without the position.
fn not_json(error: &serde_json::Error) -> JsonTextError {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let reason = message
        .strip_suffix(&position)
        .unwrap_or(&message)
        .to_owned();

    JsonTextError::NotJson {
        line: error.line(),
        column: error.column(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_json_strips_position_from_reason() {
        let Err(JsonTextError::NotJson {
            line,
            column,
            reason,
        }) = parse_bounded(b"{\n  \"a\": x\n}", 8)
        else {
            panic!("invalid JSON was accepted");
        };
        assert_eq!(line, 2);
        assert_eq!(column, 8);
        assert_eq!(reason, "expected value");
    }

    #[test]
    fn too_deep_is_checked_before_parsing() {
        // Unterminated on purpose: the depth scan must fire before the parser reads the text.
        let text = "[".repeat(100);
        assert!(matches!(
            parse_bounded(text.as_bytes(), 10),
            Err(JsonTextError::TooDeep { limit: 10 })
        ));
    }
}
