//! Loading schema files and values: each error kind, drafts and reference resolution.

mod common;

use liminal_schema::{ChannelSchema, SchemaError, SchemaLimits, ValidationFailure};
use serde_json::json;
use std::fs;
use std::path::Path;

fn write_schema(dir: &Path, file_name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(file_name);
    fs::write(&path, text).expect("temp schema file is written");
    path
}

#[test]
fn load_example_orders_schema() {
    let schema = common::orders_schema();

    assert!(schema.id().starts_with("sha256:"));
    assert_eq!(
        schema.name(),
        common::orders_schema_path().display().to_string()
    );
    assert_eq!(schema.validate(common::VALID_ORDER.as_bytes()), Ok(()));
}

#[test]
fn load_missing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing.json");

    let error = ChannelSchema::load(&path).expect_err("missing file must fail");

    assert!(
        matches!(&error, SchemaError::NotFound { path: p } if p == &path),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("schema file {} not found", path.display())
    );
}

#[test]
fn load_unreadable_file() {
    // Opening a directory succeeds on Linux but reading it fails, even as root.
    let dir = tempfile::tempdir().expect("temp dir");

    let error = ChannelSchema::load(dir.path()).expect_err("directory must fail");

    assert!(matches!(error, SchemaError::Unreadable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("failed to read schema file "),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn load_file_over_size_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_schema(dir.path(), "big.json", r#"{"type": "object"}"#);
    let limits = SchemaLimits {
        max_schema_bytes: 10,
        ..SchemaLimits::default()
    };

    let error = ChannelSchema::load_with_limits(&path, limits).expect_err("must exceed limit");

    assert!(
        matches!(error, SchemaError::TooLarge { limit: 10, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("larger than the limit of 10 bytes")
    );
}

#[test]
fn load_file_at_size_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = r#"{"type": "object"}"#;
    let path = write_schema(dir.path(), "exact.json", text);
    let limits = SchemaLimits {
        max_schema_bytes: text.len() as u64,
        ..SchemaLimits::default()
    };

    assert!(ChannelSchema::load_with_limits(&path, limits).is_ok());
}

#[test]
fn load_file_not_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_schema(dir.path(), "comma.json", "{\n  \"type\": \"object\",\n}\n");

    let error = ChannelSchema::load(&path).expect_err("trailing comma must fail");

    let SchemaError::NotJson {
        name,
        line,
        column,
        reason,
    } = &error
    else {
        panic!("expected NotJson, got {error:?}");
    };
    assert_eq!(name, &path.display().to_string());
    assert_eq!(*line, 3);
    assert_eq!(*column, 1);
    assert_eq!(reason, "trailing comma");
    assert_eq!(
        error.to_string(),
        format!(
            "schema {} is not valid JSON at line 3, column 1: trailing comma",
            path.display()
        )
    );
}

#[test]
fn load_file_not_utf8() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("latin1.json");
    fs::write(&path, b"{\"title\": \"caf\xe9\"}").expect("file is written");

    let error = ChannelSchema::load(&path).expect_err("invalid UTF-8 must fail");

    assert!(
        matches!(error, SchemaError::NotJson { line: 1, .. }),
        "{error:?}"
    );
}

#[test]
fn load_file_nested_too_deep() {
    let dir = tempfile::tempdir().expect("temp dir");
    for levels in [65, 10_000] {
        let text = format!("{}{}", r#"{"not":"#.repeat(levels), "}".repeat(levels));
        let path = write_schema(dir.path(), "deep.json", &text);

        let error = ChannelSchema::load(&path).expect_err("deep schema must fail");

        assert!(
            matches!(error, SchemaError::TooDeep { limit: 64, .. }),
            "{levels}: {error:?}"
        );
    }
}

#[test]
fn load_file_nested_at_depth_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!("{}{{}}{}", r#"{"not":"#.repeat(63), "}".repeat(63));
    let path = write_schema(dir.path(), "limit.json", &text);

    let schema = ChannelSchema::load(&path).expect("64 levels are allowed");

    // 63 nested `not`s around an empty schema reject everything.
    assert!(matches!(
        schema.validate(b"1"),
        Err(ValidationFailure::Invalid { .. })
    ));
}

#[test]
fn from_value_nested_too_deep() {
    let mut schema = json!({});
    for _ in 0..1_000 {
        schema = json!({ "items": schema });
    }

    let error = ChannelSchema::from_value("generated", schema).expect_err("must be too deep");

    assert!(
        matches!(&error, SchemaError::TooDeep { name, limit: 64 } if name == "generated"),
        "{error:?}"
    );
}

#[test]
fn invalid_schema_names_location() {
    let error = ChannelSchema::from_value("prices", json!({"minimum": "zero"}))
        .expect_err("string minimum must fail");

    assert!(
        matches!(error, SchemaError::InvalidSchema { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "schema prices is not a valid JSON Schema: \"zero\" is not of type \"number\" (at /minimum)"
    );
}

#[test]
fn invalid_schema_from_file_names_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_schema(dir.path(), "typo.json", r#"{"type": "strin"}"#);

    let error = ChannelSchema::load(&path).expect_err("unknown type must fail");

    let message = error.to_string();
    assert!(
        matches!(error, SchemaError::InvalidSchema { .. }),
        "{error:?}"
    );
    assert!(message.starts_with(&format!("schema {} is not a valid", path.display())));
    assert!(message.ends_with("(at /type)"), "{message}");
}

#[test]
fn external_ref_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_schema(dir.path(), "other.json", r#"{"type": "string"}"#);
    let path = write_schema(dir.path(), "main.json", r#"{"$ref": "other.json"}"#);

    let error = ChannelSchema::load(&path).expect_err("external $ref must fail");

    assert!(
        matches!(error, SchemaError::InvalidSchema { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("other.json"));
}

#[test]
fn local_ref_is_resolved() {
    let schema = ChannelSchema::from_value(
        "refs",
        json!({
            "$defs": {"positive": {"type": "integer", "minimum": 1}},
            "properties": {"count": {"$ref": "#/$defs/positive"}}
        }),
    )
    .expect("local $ref loads");

    assert_eq!(schema.validate(br#"{"count": 3}"#), Ok(()));
    assert!(schema.validate(br#"{"count": 0}"#).is_err());
}

#[test]
fn missing_local_ref_is_rejected() {
    let error = ChannelSchema::from_value("refs", json!({"$ref": "#/$defs/missing"}))
        .expect_err("dangling $ref must fail");

    assert!(
        matches!(error, SchemaError::InvalidSchema { .. }),
        "{error:?}"
    );
}

#[test]
fn unknown_meta_schema_is_rejected() {
    let error = ChannelSchema::from_value(
        "custom",
        json!({"$schema": "https://example.com/my-meta", "type": "string"}),
    )
    .expect_err("unknown $schema must fail");

    assert!(
        matches!(error, SchemaError::InvalidSchema { .. }),
        "{error:?}"
    );
}

#[test]
fn draft_2020_12_is_default() {
    // Draft 2020-12 replaced the array form of `items` with `prefixItems`.
    let error = ChannelSchema::from_value("tuple", json!({"items": [{"type": "string"}]}))
        .expect_err("array `items` is invalid in draft 2020-12");

    assert!(
        matches!(error, SchemaError::InvalidSchema { .. }),
        "{error:?}"
    );
}

#[test]
fn schema_keyword_selects_draft() {
    let schema = ChannelSchema::from_value(
        "tuple",
        json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "items": [{"type": "string"}]
        }),
    )
    .expect("array `items` is valid in draft 7");

    assert_eq!(schema.validate(br#"["a", 1]"#), Ok(()));
    assert!(schema.validate(br#"[1]"#).is_err());
}
