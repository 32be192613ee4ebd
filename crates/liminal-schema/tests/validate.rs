//! Payload validation: each failure kind, violation details and messages.

mod common;

use common::{VALID_ORDER, order_with, orders_schema};
use liminal_schema::{
    ChannelSchema, MAX_REPORTED_VIOLATIONS, SchemaLimits, ValidationFailure, Violation,
};
use serde_json::json;
use std::sync::Arc;

fn violations_of(failure: ValidationFailure) -> (Vec<Violation>, usize) {
    match failure {
        ValidationFailure::Invalid {
            violations, total, ..
        } => (violations, total),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn valid_order_is_accepted() {
    assert_eq!(orders_schema().validate(VALID_ORDER.as_bytes()), Ok(()));
}

#[test]
fn optional_fields_may_be_absent() {
    let minimal = r#"{"id": "ORD-00000001", "sku": "XYZ-9", "quantity": 1, "price": 0,
        "currency": "USD", "customer": {"id": "c", "email": "a@example.org"},
        "created_at": "2026-01-01T00:00:00+01:00", "status": "new"}"#;

    assert_eq!(orders_schema().validate(minimal.as_bytes()), Ok(()));
}

#[test]
fn violation_has_pointers_and_reason() {
    let payload = order_with("price", "-3");

    let failure = orders_schema()
        .validate(payload.as_bytes())
        .expect_err("price < 0");
    let (violations, total) = violations_of(failure);

    assert_eq!(total, 1);
    assert_eq!(
        violations,
        vec![Violation {
            instance_path: "/price".to_owned(),
            schema_path: "/properties/price/minimum".to_owned(),
            keyword: "minimum".to_owned(),
            reason: "-3 is less than the minimum of 0".to_owned(),
        }]
    );
}

#[test]
fn nested_violation_path() {
    let payload = order_with("customer", r#"{"id": "c", "email": "not-an-address"}"#);

    let failure = orders_schema()
        .validate(payload.as_bytes())
        .expect_err("bad email");
    let (violations, _) = violations_of(failure);

    assert_eq!(violations[0].instance_path, "/customer/email");
    assert_eq!(
        violations[0].schema_path,
        "/properties/customer/properties/email/format"
    );
    assert_eq!(violations[0].keyword, "format");
}

#[test]
fn array_item_violation_path() {
    let payload = order_with("tags", r#"["ok", ""]"#);

    let failure = orders_schema()
        .validate(payload.as_bytes())
        .expect_err("empty tag");
    let (violations, _) = violations_of(failure);

    assert_eq!(violations[0].instance_path, "/tags/1");
    assert_eq!(violations[0].keyword, "minLength");
}

#[test]
fn pointer_escapes_special_keys() {
    let schema = ChannelSchema::from_value(
        "escapes",
        json!({"properties": {"a/b~c": {"type": "integer"}}}),
    )
    .expect("schema loads");

    let failure = schema
        .validate(br#"{"a/b~c": "x"}"#)
        .expect_err("wrong type");
    let (violations, _) = violations_of(failure);

    assert_eq!(violations[0].instance_path, "/a~1b~0c");
}

#[test]
fn date_time_format_is_asserted() {
    let payload = order_with("created_at", r#""yesterday""#);

    let failure = orders_schema()
        .validate(payload.as_bytes())
        .expect_err("bad timestamp");
    let (violations, _) = violations_of(failure);

    assert_eq!(violations[0].instance_path, "/created_at");
    assert_eq!(violations[0].keyword, "format");
    assert_eq!(violations[0].reason, r#""yesterday" is not a "date-time""#);
}

#[test]
fn display_reads_as_error_frame() {
    let schema = orders_schema();
    let mut order: serde_json::Value = serde_json::from_str(VALID_ORDER).expect("fixture parses");
    order["price"] = json!(-3);
    order["sku"] = json!("x");

    let failure = schema
        .validate(order.to_string().as_bytes())
        .expect_err("two violations");

    let short_id = &schema.id()[..("sha256:".len() + 12)];
    assert_eq!(
        failure.to_string(),
        format!(
            "payload does not match schema {short_id}…: \
             /price: -3 is less than the minimum of 0; \
             /sku: \"x\" does not match \"^[A-Z]{{3}}-[0-9]+$\""
        )
    );
}

#[test]
fn root_violation_shown_as_root() {
    let failure = orders_schema()
        .validate(br#"{"id": "ORD-00000001"}"#)
        .expect_err("required fields missing");

    let message = failure.to_string();
    let (violations, _) = violations_of(failure);

    assert_eq!(violations[0].instance_path, "");
    assert_eq!(violations[0].keyword, "required");
    assert!(
        message.contains("(root): \"sku\" is a required property"),
        "{message}"
    );
}

#[test]
fn violations_capped_with_total() {
    let payload = r#"{"id": 1, "sku": 2, "quantity": 0, "price": -1, "currency": "XXX",
        "customer": {}, "created_at": "now", "status": "lost", "extra": true}"#;
    let schema = orders_schema();

    let failure = schema
        .validate(payload.as_bytes())
        .expect_err("many violations");
    let message = failure.to_string();
    let (violations, total) = violations_of(failure);

    assert_eq!(violations.len(), MAX_REPORTED_VIOLATIONS);
    assert!(total > MAX_REPORTED_VIOLATIONS, "total {total}");
    let omitted = total - MAX_REPORTED_VIOLATIONS;
    assert!(
        message.ends_with(&format!("; and {omitted} more")),
        "{message}"
    );
}

#[test]
fn invalid_carries_full_schema_id() {
    let schema = orders_schema();

    let failure = schema.validate(b"{}").expect_err("empty order");

    let ValidationFailure::Invalid { schema_id, .. } = failure else {
        panic!("expected Invalid");
    };
    assert_eq!(&*schema_id, schema.id());
}

#[test]
fn not_utf8_reports_offset() {
    let failure = orders_schema()
        .validate(b"{\"id\": \"\xff\"}")
        .expect_err("invalid UTF-8");

    assert_eq!(failure, ValidationFailure::NotUtf8 { valid_up_to: 8 });
    assert_eq!(
        failure.to_string(),
        "payload is not valid UTF-8: invalid byte sequence at byte offset 8"
    );
}

#[test]
fn not_json_reports_position() {
    let cases: [(&[u8], usize, usize, &str); 4] = [
        (b"{\"id\": }", 1, 8, "expected value"),
        (b"{}\n x", 2, 2, "trailing characters"),
        (b"", 1, 0, "EOF while parsing a value"),
        (b"{\"id\": \"\\q\"}", 1, 10, "invalid escape"),
    ];
    let schema = orders_schema();

    for (payload, line, column, reason) in cases {
        let failure = schema.validate(payload).expect_err("invalid JSON");
        assert_eq!(
            failure,
            ValidationFailure::NotJson {
                line,
                column,
                reason: reason.to_owned()
            },
            "payload {:?}",
            String::from_utf8_lossy(payload)
        );
    }
}

#[test]
fn not_json_display() {
    let failure = orders_schema()
        .validate(b"{\"id\": }")
        .expect_err("invalid JSON");

    assert_eq!(
        failure.to_string(),
        "payload is not valid JSON at line 1, column 8: expected value"
    );
}

#[test]
fn too_large_checked_first() {
    let limits = SchemaLimits {
        max_payload_bytes: 16,
        ..SchemaLimits::default()
    };
    let schema = ChannelSchema::from_value_with_limits("small", json!({}), limits).expect("loads");
    // Not UTF-8 either: the size check must win.
    let payload = [0xffu8; 17];

    let failure = schema.validate(&payload).expect_err("over the limit");

    assert_eq!(
        failure,
        ValidationFailure::TooLarge {
            size: 17,
            limit: 16
        }
    );
    assert_eq!(
        failure.to_string(),
        "payload is 17 bytes, over the schema check limit of 16 bytes"
    );
    assert_eq!(schema.validate(b"[1,2,3,4,5,6,77]"), Ok(()));
}

#[test]
fn kind_names_are_distinct() {
    let schema = ChannelSchema::from_value_with_limits(
        "kinds",
        json!({"type": "integer"}),
        SchemaLimits {
            max_payload_bytes: 8,
            max_payload_depth: 1,
            ..SchemaLimits::default()
        },
    )
    .expect("loads");
    let cases: [(&[u8], &str); 5] = [
        (b"123456789", "too_large"),
        (b"\xff", "not_utf8"),
        (b"{", "not_json"),
        (b"[[1]]", "too_deep"),
        (b"\"s\"", "invalid"),
    ];

    for (payload, kind) in cases {
        let failure = schema.validate(payload).expect_err("each case fails");
        assert_eq!(failure.kind_name(), kind, "{failure:?}");
    }
}

#[test]
fn schema_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChannelSchema>();

    let schema = Arc::new(orders_schema());
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let schema = Arc::clone(&schema);
            std::thread::spawn(move || {
                for _ in 0..100 {
                    assert_eq!(schema.validate(VALID_ORDER.as_bytes()), Ok(()));
                    let bad = order_with("quantity", &format!("{}", -worker));
                    assert!(schema.validate(bad.as_bytes()).is_err());
                }
            })
        })
        .collect();

    for worker in workers {
        worker.join().expect("worker thread finishes without panic");
    }
}
