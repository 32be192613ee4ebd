//! Schema ids: stable across formatting and key order, and sensitive to content.

mod common;

use liminal_schema::{ChannelSchema, schema_id};
use serde_json::json;
use std::fs;

#[test]
fn id_matches_independent_sha256() {
    // sha256 of the canonical text `{"required":["a"],"type":"object"}`, computed with sha256sum.
    let expected = "sha256:adbf9998321db5c71a5ad58f9e2c5c602c6fcf454635e9e915559cad325a3b00";

    let schema = ChannelSchema::from_value("a", json!({"type": "object", "required": ["a"]}))
        .expect("schema loads");

    assert_eq!(schema.id(), expected);
}

#[test]
fn id_ignores_whitespace_and_key_order() {
    let compact = r#"{"type":"object","properties":{"b":{"type":"string","maxLength":3},"a":{"minimum":0}},"required":["a","b"]}"#;
    let reordered = r#"
        {
            "required" : [ "a", "b" ],
            "properties": {
                "a": { "minimum": 0 },
                "b": { "maxLength": 3, "type": "string" }
            },
            "type": "object"
        }
    "#;
    let dir = tempfile::tempdir().expect("temp dir");
    let compact_path = dir.path().join("compact.json");
    let reordered_path = dir.path().join("reordered.json");
    fs::write(&compact_path, compact).expect("file is written");
    fs::write(&reordered_path, reordered).expect("file is written");

    let compact_schema = ChannelSchema::load(&compact_path).expect("compact loads");
    let reordered_schema = ChannelSchema::load(&reordered_path).expect("reordered loads");

    assert_eq!(compact_schema.id(), reordered_schema.id());
}

#[test]
fn id_changes_with_content() {
    let base = json!({"properties": {"a": {"minimum": 0}}, "required": ["a", "b"]});
    let changed_number = json!({"properties": {"a": {"minimum": 1}}, "required": ["a", "b"]});
    let changed_order = json!({"properties": {"a": {"minimum": 0}}, "required": ["b", "a"]});
    let changed_key = json!({"properties": {"A": {"minimum": 0}}, "required": ["a", "b"]});

    let base_id = schema_id(&base);

    assert_ne!(base_id, schema_id(&changed_number));
    assert_ne!(base_id, schema_id(&changed_order));
    assert_ne!(base_id, schema_id(&changed_key));
}

#[test]
fn id_format_is_prefixed_lowercase_hex() {
    let schema = common::orders_schema();
    let digest = schema
        .id()
        .strip_prefix("sha256:")
        .expect("id has the sha256 prefix");

    assert_eq!(digest.len(), 64);
    assert!(
        digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
}

#[test]
fn file_and_value_ids_agree() {
    let text = fs::read_to_string(common::orders_schema_path()).expect("example schema reads");
    let value: serde_json::Value = serde_json::from_str(&text).expect("example schema parses");

    let from_file = common::orders_schema();
    let from_value = ChannelSchema::from_value("orders", value).expect("value loads");

    assert_eq!(from_file.id(), from_value.id());
}
