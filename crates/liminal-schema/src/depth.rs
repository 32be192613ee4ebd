//! Nesting-depth checks that run without recursion, so hostile input cannot exhaust the stack.
//!
//! Depth counts enclosing arrays and objects: a scalar has depth 0, `[]` and `{}` have depth 1,
//! and `[{"a": 1}]` has depth 2.

use serde_json::Value;

/// Checks that the JSON text in `text` nests no deeper than `limit`.
///
/// The scan counts brackets outside string literals in one pass and stops at the first container
/// past the limit. It does not check the JSON grammar. On valid JSON it returns the same depth as
/// [`value_exceeds_depth`] on the parsed value. Invalid JSON is left for the parser to reject.
pub(crate) fn text_exceeds_depth(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut after_backslash = false;

    for &byte in text {
        if in_string {
            if after_backslash {
                after_backslash = false;
            } else if byte == b'\\' {
                after_backslash = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }

        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Checks that `value` nests no deeper than `limit`, walking it with an explicit stack.
pub(crate) fn value_exceeds_depth(value: &Value, limit: usize) -> bool {
    // Each entry is a value and the number of containers that enclose it.
    let mut pending: Vec<(&Value, usize)> = vec![(value, 0)];

    while let Some((current, enclosing)) = pending.pop() {
        let own_depth = enclosing + 1;
        match current {
            Value::Array(items) => {
                if own_depth > limit {
                    return true;
                }
                pending.extend(items.iter().map(|item| (item, own_depth)));
            }
            Value::Object(fields) => {
                if own_depth > limit {
                    return true;
                }
                pending.extend(fields.values().map(|field| (field, own_depth)));
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_depth_counts_containers() {
        assert!(!text_exceeds_depth(b"1", 0));
        assert!(text_exceeds_depth(b"[]", 0));
        assert!(!text_exceeds_depth(b"[]", 1));
        assert!(!text_exceeds_depth(br#"[{"a": [1]}]"#, 3));
        assert!(text_exceeds_depth(br#"[{"a": [1]}]"#, 2));
    }

    #[test]
    fn text_depth_ignores_brackets_in_strings() {
        assert!(!text_exceeds_depth(br#"{"k": "[[[[{{{{"}"#, 1));
        assert!(!text_exceeds_depth(br#"{"k\"[[[": "\\"}"#, 1));
        assert!(text_exceeds_depth(br#"{"k": "\\", "x": [[1]]}"#, 2));
    }

    #[test]
    fn text_depth_resets_after_siblings() {
        assert!(!text_exceeds_depth(b"[[1],[2],[3],[[4]]]", 3));
        assert!(text_exceeds_depth(b"[[1],[2],[3],[[[4]]]]", 3));
    }

    #[test]
    fn value_depth_matches_text_depth() {
        let cases = [
            json!(1),
            json!([]),
            json!({"a": {"b": [1, {"c": []}]}}),
            json!([[[[[]]]], {"x": 1}]),
        ];
        for value in cases {
            let text = value.to_string();
            for limit in 0..6 {
                assert_eq!(
                    value_exceeds_depth(&value, limit),
                    text_exceeds_depth(text.as_bytes(), limit),
                    "value {text} with limit {limit}"
                );
            }
        }
    }
}
