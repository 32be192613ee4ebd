//! Time of `ChannelSchema::validate` on a valid ten-field order against the example schema, and of
//! parsing the same order into a `serde_json::Value` alone, which is the part of every validation
//! that the jsonschema crate's API makes necessary.
//!
//! Run: `cargo bench -p liminal-schema --bench validate -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use liminal_schema::ChannelSchema;
use std::hint::black_box;
use std::path::PathBuf;

const VALID_ORDER: &str = r#"{"id":"ORD-00012345","sku":"ABC-123","quantity":2,"price":19.99,"currency":"EUR","customer":{"id":"c-42","email":"ada@example.com","name":"Ada Lovelace"},"created_at":"2026-12-04T21:05:00Z","tags":["gift","express"],"status":"paid","notes":null}"#;

fn validate_order(c: &mut Criterion) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/schemas/orders.json");
    let schema = ChannelSchema::load(&path).expect("the example orders schema loads");
    assert_eq!(schema.validate(VALID_ORDER.as_bytes()), Ok(()));

    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(VALID_ORDER.len() as u64));
    group.bench_function("valid_order_10_fields", |b| {
        b.iter(|| schema.validate(black_box(VALID_ORDER.as_bytes())))
    });
    group.bench_function("parse_only_10_fields", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(VALID_ORDER.as_bytes())))
    });
    group.finish();
}

criterion_group!(benches, validate_order);
criterion_main!(benches);
