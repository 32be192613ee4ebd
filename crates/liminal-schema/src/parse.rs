//! Bounded parsing of JSON text from schema files and payloads.

use crate::depth::{text_exceeds_depth, value_exceeds_depth};
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

/// Parses `text` and checks that it nests no deeper than `depth_limit`.
///
/// serde_json's own recursion limit keeps the parser's stack bounded, so the depth is checked on
/// the result: on the parsed value when parsing succeeds, and by a linear scan of the text when it
/// fails. Text nested thousands of levels deep costs one parse that stops at serde_json's limit
/// plus one scan. Text that nests too deep is reported as [`JsonTextError::TooDeep`] even when it
/// is also invalid JSON. The accepting path never scans the text.
///
/// `depth_limit` must be at most [`crate::SERDE_JSON_MAX_DEPTH`].
pub(crate) fn parse_bounded(text: &[u8], depth_limit: usize) -> Result<Value, JsonTextError> {
    let too_deep = JsonTextError::TooDeep { limit: depth_limit };
    // Each level of nesting takes two bytes, an opening and a closing bracket.
    let may_be_too_deep = text.len() / 2 > depth_limit;

    match serde_json::from_slice(text) {
        Ok(value) if may_be_too_deep && value_exceeds_depth(&value, depth_limit) => Err(too_deep),
        Ok(value) => Ok(value),
        Err(_) if text_exceeds_depth(text, depth_limit) => Err(too_deep),
        Err(error) => Err(not_json(&error)),
    }
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
    fn too_deep_wins_over_invalid_json() {
        // Unterminated on purpose: text that is both too deep and invalid is reported as too deep.
        let text = "[".repeat(100);
        assert!(matches!(
            parse_bounded(text.as_bytes(), 10),
            Err(JsonTextError::TooDeep { limit: 10 })
        ));
    }

    #[test]
    fn too_deep_valid_json_is_rejected() {
        let text = format!("{}{}", "[".repeat(11), "]".repeat(11));
        assert!(matches!(
            parse_bounded(text.as_bytes(), 10),
            Err(JsonTextError::TooDeep { limit: 10 })
        ));
        assert!(parse_bounded(text.as_bytes(), 11).is_ok());
    }

    #[test]
    fn deeper_than_serde_json_limit_is_too_deep() {
        let depth = 10_000;
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(matches!(
            parse_bounded(text.as_bytes(), crate::SERDE_JSON_MAX_DEPTH),
            Err(JsonTextError::TooDeep { limit }) if limit == crate::SERDE_JSON_MAX_DEPTH
        ));
    }

    #[test]
    fn serde_json_depth_cap() {
        let at_cap = crate::SERDE_JSON_MAX_DEPTH;
        let text = format!("{}{}", "[".repeat(at_cap), "]".repeat(at_cap));
        assert!(
            serde_json::from_str::<Value>(&text).is_ok(),
            "{at_cap} levels must parse"
        );

        let past_cap = at_cap + 1;
        let text = format!("{}{}", "[".repeat(past_cap), "]".repeat(past_cap));
        let error = serde_json::from_str::<Value>(&text).unwrap_err();
        assert!(
            error.to_string().starts_with("recursion limit exceeded"),
            "{error}"
        );
    }
}
