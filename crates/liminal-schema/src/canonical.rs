//! Canonical JSON text and the schema ids derived from it.
//!
//! Canonical form, which fixes the bytes that the id hashes:
//! - objects list their members sorted by key, comparing keys as UTF-8 byte strings;
//! - arrays keep their order;
//! - no whitespace appears between tokens, and `,` and `:` separate members and values;
//! - strings are written as serde_json writes them: `"` and `\` and control characters are
//!   escaped, and every other character, non-ASCII included, is written as itself;
//! - numbers are written as serde_json writes the parsed number. Integers that fit `i64` or `u64`
//!   are written in decimal, and every other number is parsed to `f64` and written in its shortest
//!   round-trip form. So `1e2` and `100.0` both give `100.0`, `-0` gives `-0.0`, and `1` and `1.0`
//!   give different text although JSON Schema treats them as equal.
//!
//! Reformatting a schema file or reordering its keys therefore keeps its id, while any change to
//! a key, string, number or array order changes it.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Prefix of every schema id, naming the hash function.
pub const SCHEMA_ID_PREFIX: &str = "sha256:";

/// Writes `value` as canonical JSON text, described in the module documentation.
///
/// Recursion depth equals the nesting depth of `value`, so callers that accept untrusted values
/// check the depth first. [`crate::ChannelSchema`] does this.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out).expect("writing JSON into a Vec<u8> cannot fail");
    out
}

/// Computes the schema id of `value`: [`SCHEMA_ID_PREFIX`] and the lowercase hex SHA-256 digest
/// of its canonical JSON text.
pub fn schema_id(value: &Value) -> String {
    let digest = Sha256::digest(canonical_json(value));
    format!("{SCHEMA_ID_PREFIX}{digest:x}")
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(fields) => {
            let mut sorted: Vec<(&String, &Value)> = fields.iter().collect();
            sorted.sort_unstable_by(|(left, _), (right, _)| left.as_bytes().cmp(right.as_bytes()));

            out.push(b'{');
            for (index, (key, field)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                write_canonical(field, out)?;
            }
            out.push(b'}');
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            serde_json::to_writer(&mut *out, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical_text(value: &Value) -> String {
        String::from_utf8(canonical_json(value)).expect("canonical JSON is UTF-8")
    }

    #[test]
    fn canonical_sorts_keys_recursively() {
        let value: Value =
            serde_json::from_str(r#"{"b": {"z": 1, "a": [ {"y": 2, "x": 3} ]}, "a": null}"#)
                .expect("test JSON parses");
        assert_eq!(
            canonical_text(&value),
            r#"{"a":null,"b":{"a":[{"x":3,"y":2}],"z":1}}"#
        );
    }

    #[test]
    fn canonical_sorts_keys_by_utf8_bytes() {
        let value = json!({"é": 1, "z": 2, "Z": 3, "": 4});
        assert_eq!(canonical_text(&value), r#"{"":4,"Z":3,"z":2,"é":1}"#);
    }

    #[test]
    fn canonical_escapes_strings() {
        let value = json!({"quote\"key": "line\nbreak \\ tab\t \u{1} ünï"});
        assert_eq!(
            canonical_text(&value),
            r#"{"quote\"key":"line\nbreak \\ tab\t \u0001 ünï"}"#
        );
    }

    #[test]
    fn canonical_numbers_follow_serde_json() {
        let value: Value =
            serde_json::from_str("[1, 1.0, 1e2, -0, 18446744073709551615, 0.1]").expect("parses");
        assert_eq!(
            canonical_text(&value),
            "[1,1.0,100.0,-0.0,18446744073709551615,0.1]"
        );
    }

    #[test]
    fn schema_id_is_prefixed_sha256() {
        // SHA-256 of the two bytes `{}`.
        assert_eq!(
            schema_id(&json!({})),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
