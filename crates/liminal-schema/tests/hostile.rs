//! Hostile payloads and schemas: deep nesting, huge numbers, long strings and slow regexes.
//!
//! Time bounds are generous because CI shares two cores with other builds. Each bound is still
//! far below the cost of an unbounded check, which for these inputs is a stack overflow or hours
//! of backtracking.

mod common;

use common::{order_with, orders_schema};
use liminal_schema::{
    ChannelSchema, MAX_REASON_CHARS, PatternEngine, SERDE_JSON_MAX_DEPTH, SchemaError,
    SchemaLimits, ValidationFailure,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TIME_BOUND: Duration = Duration::from_secs(2);

fn nested_arrays(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

fn nested_objects(levels: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels))
}

/// Accepts any array nested to any depth, so validation recurses as deep as the payload.
fn recursive_array_schema(limits: SchemaLimits) -> ChannelSchema {
    let schema = json!({
        "$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "$ref": "#/$defs/node"
    });
    ChannelSchema::from_value_with_limits("recursive", schema, limits).expect("schema loads")
}

#[test]
fn serde_json_depth_cap() {
    let at_cap = nested_arrays(SERDE_JSON_MAX_DEPTH);
    let past_cap = nested_arrays(SERDE_JSON_MAX_DEPTH + 1);

    assert!(serde_json::from_str::<Value>(&at_cap).is_ok());
    let error = serde_json::from_str::<Value>(&past_cap).expect_err("past serde_json's cap");
    assert!(
        error.to_string().starts_with("recursion limit exceeded"),
        "{error}"
    );
}

#[test]
fn ten_thousand_levels_rejected_quickly() {
    let schema = orders_schema();
    let unterminated = "[".repeat(10_000);
    let payloads = [nested_arrays(10_000), nested_objects(10_000), unterminated];

    for payload in payloads {
        let started = Instant::now();
        let failure = schema.validate(payload.as_bytes()).expect_err("too deep");
        let elapsed = started.elapsed();

        assert_eq!(failure, ValidationFailure::TooDeep { limit: 64 });
        assert!(elapsed < TIME_BOUND, "took {elapsed:?}");
    }
}

#[test]
fn depth_limit_is_exact() {
    let schema = recursive_array_schema(SchemaLimits::default());

    assert_eq!(schema.validate(nested_arrays(64).as_bytes()), Ok(()));
    assert_eq!(
        schema.validate(nested_arrays(65).as_bytes()),
        Err(ValidationFailure::TooDeep { limit: 64 })
    );
}

#[test]
fn depth_limit_capped_at_parser_limit() {
    let limits = SchemaLimits {
        max_payload_depth: 10_000,
        ..SchemaLimits::default()
    };
    let schema = recursive_array_schema(limits);

    assert_eq!(limits.effective_payload_depth(), SERDE_JSON_MAX_DEPTH);
    assert_eq!(
        schema.validate(nested_arrays(SERDE_JSON_MAX_DEPTH).as_bytes()),
        Ok(())
    );
    assert_eq!(
        schema.validate(nested_arrays(SERDE_JSON_MAX_DEPTH + 1).as_bytes()),
        Err(ValidationFailure::TooDeep {
            limit: SERDE_JSON_MAX_DEPTH
        })
    );
}

#[test]
fn deepest_invalid_payload_reports_violation() {
    // Builds errors at the deepest level the parser allows, which exercises the recursive error
    // collection on the default test-thread stack.
    let limits = SchemaLimits {
        max_payload_depth: SERDE_JSON_MAX_DEPTH,
        ..SchemaLimits::default()
    };
    let schema = recursive_array_schema(limits);
    let levels = SERDE_JSON_MAX_DEPTH - 1;
    let payload = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));

    let failure = schema
        .validate(payload.as_bytes())
        .expect_err("innermost 1 is not an array");

    let ValidationFailure::Invalid { violations, .. } = failure else {
        panic!("expected Invalid, got {failure:?}");
    };
    assert_eq!(violations[0].instance_path, "/0".repeat(levels));
}

#[test]
fn huge_numbers_rejected_as_not_json() {
    let four_hundred_digits = "9".repeat(400);
    let cases = [
        "1e400".to_owned(),
        "-1e400".to_owned(),
        "1e999999999999999999".to_owned(),
        four_hundred_digits.clone(),
        format!("-{four_hundred_digits}"),
        format!("{four_hundred_digits}.5"),
    ];
    let schema = orders_schema();

    for number in cases {
        let payload =
            order_with("price", "0").replace("\"price\":0", &format!("\"price\":{number}"));
        assert!(payload.contains(&number), "fixture must embed {number}");

        let failure = schema
            .validate(payload.as_bytes())
            .expect_err("out of f64 range");

        let ValidationFailure::NotJson { reason, .. } = &failure else {
            panic!("{number}: expected NotJson, got {failure:?}");
        };
        assert_eq!(reason, "number out of range", "{number}");
    }
}

#[test]
fn large_numbers_in_range_are_checked() {
    let schema = orders_schema();
    let three_hundred_digits = "9".repeat(300);

    let price = order_with("price", &three_hundred_digits);
    assert_eq!(schema.validate(price.as_bytes()), Ok(()));

    let quantity = order_with("quantity", &three_hundred_digits);
    let failure = schema
        .validate(quantity.as_bytes())
        .expect_err("over the maximum");
    let ValidationFailure::Invalid { violations, .. } = failure else {
        panic!("expected Invalid, got {failure:?}");
    };
    assert_eq!(violations[0].instance_path, "/quantity");

    let tiny = order_with("price", "1e-400");
    assert_eq!(
        schema.validate(tiny.as_bytes()),
        Ok(()),
        "underflow rounds to 0"
    );
}

#[test]
fn long_string_reason_is_truncated() {
    let schema = orders_schema();
    let long = "x".repeat(900 * 1024);

    for field in ["notes", "sku"] {
        let payload = order_with(field, &format!("\"{long}\""));

        let started = Instant::now();
        let failure = schema
            .validate(payload.as_bytes())
            .expect_err("string breaks schema");
        let elapsed = started.elapsed();

        let ValidationFailure::Invalid { violations, .. } = &failure else {
            panic!("{field}: expected Invalid, got {failure:?}");
        };
        assert_eq!(violations[0].instance_path, format!("/{field}"));
        assert_eq!(violations[0].reason.chars().count(), MAX_REASON_CHARS);
        assert!(violations[0].reason.ends_with('…'));
        assert!(failure.to_string().len() < 2 * MAX_REASON_CHARS + 100);
        assert!(elapsed < TIME_BOUND, "{field} took {elapsed:?}");
    }
}

#[test]
fn many_pattern_matches_stay_linear() {
    let schema = ChannelSchema::from_value(
        "codes",
        json!({"type": "array", "items": {"type": "string", "pattern": "^(a+)+$"}}),
    )
    .expect("schema loads");
    // About 1 MiB of strings that a classic backtracking engine, such as JavaScript's, would
    // explore in exponential time on the failing item. Every item but the last matches, so the
    // validator must run the pattern on all 30,000 of them before it finds the failure.
    let good = format!("\"{}\"", "a".repeat(28));
    let bad = format!("\"{}b\"", "a".repeat(28));
    let mut items = vec![good; 29_999];
    items.push(bad);
    let payload = format!("[{}]", items.join(","));
    assert!(payload.len() < schema.limits().max_payload_bytes);

    let started = Instant::now();
    let failure = schema
        .validate(payload.as_bytes())
        .expect_err("the last item does not match");
    let elapsed = started.elapsed();

    // Payloads this large report only their first violation.
    let ValidationFailure::Invalid { total, violations, .. } = failure else {
        panic!("expected Invalid, got {failure:?}");
    };
    assert_eq!(total, 1);
    assert_eq!(violations[0].instance_path, "/29999");
    assert!(elapsed < TIME_BOUND, "took {elapsed:?}");
}

#[test]
fn linear_engine_rejects_backreferences() {
    let error = ChannelSchema::from_value("backref", json!({"pattern": r"^(a|a)*\1$"}))
        .expect_err("the linear engine has no backreferences");

    assert!(
        matches!(error, SchemaError::InvalidSchema { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("(at /pattern)"), "{error}");
}

#[test]
fn backtracking_pattern_hits_limit() {
    let limits = SchemaLimits {
        pattern_engine: PatternEngine::Backtracking {
            backtrack_limit: 10_000,
        },
        ..SchemaLimits::default()
    };
    // The backreference forces fancy-regex onto its backtracking VM, where `(a|a)*` explores
    // 2^n paths on a string of n `a`s that cannot match.
    let schema = ChannelSchema::from_value_with_limits(
        "catastrophic",
        json!({"type": "string", "pattern": r"^(a|a)*\1?$"}),
        limits,
    )
    .expect("the backtracking engine accepts backreferences");
    let payload = format!("\"{}c\"", "a".repeat(40));

    let started = Instant::now();
    let failure = schema
        .validate(payload.as_bytes())
        .expect_err("limit reached");
    let elapsed = started.elapsed();

    let ValidationFailure::Invalid { violations, .. } = failure else {
        panic!("expected Invalid, got {failure:?}");
    };
    assert_eq!(violations[0].keyword, "pattern");
    assert!(
        violations[0].reason.contains("backtracking"),
        "{}",
        violations[0].reason
    );
    assert!(elapsed < TIME_BOUND, "took {elapsed:?}");
    assert_eq!(schema.validate(b"\"aa\""), Ok(()));
}

#[test]
fn backtracking_engine_supports_lookahead() {
    let limits = SchemaLimits {
        pattern_engine: PatternEngine::Backtracking {
            backtrack_limit: 10_000,
        },
        ..SchemaLimits::default()
    };
    let schema = ChannelSchema::from_value_with_limits(
        "password",
        json!({"type": "string", "pattern": "^(?=.*[0-9]).{8,}$"}),
        limits,
    )
    .expect("look-ahead compiles");

    assert_eq!(schema.validate(b"\"abcdefg1\""), Ok(()));
    assert!(schema.validate(b"\"abcdefgh\"").is_err());
}

#[test]
fn large_unique_array_rejected_quickly() {
    // jsonschema compares small arrays pairwise for `uniqueItems`. This checks that an array of
    // 90,000 distinct tags, near the size limit, does not take that quadratic path.
    let tags: Vec<String> = (0..90_000).map(|index| format!("\"t{index}\"")).collect();
    let payload = order_with("tags", &format!("[{}]", tags.join(",")));
    assert!(payload.len() < SchemaLimits::default().max_payload_bytes);

    let started = Instant::now();
    let failure = orders_schema()
        .validate(payload.as_bytes())
        .expect_err("over maxItems");
    let elapsed = started.elapsed();

    let ValidationFailure::Invalid { violations, .. } = failure else {
        panic!("expected Invalid, got {failure:?}");
    };
    assert_eq!(violations[0].keyword, "maxItems");
    assert!(elapsed < TIME_BOUND, "took {elapsed:?}");
}
