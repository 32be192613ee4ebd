//! Fixtures shared by the integration tests.

#![allow(dead_code)]

use liminal_schema::ChannelSchema;
use std::path::PathBuf;

/// Path of the example schema shipped in the repository's `config/schemas`.
pub fn orders_schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/schemas/orders.json")
}

/// Loads the example orders schema with default limits.
pub fn orders_schema() -> ChannelSchema {
    ChannelSchema::load(&orders_schema_path()).expect("the example orders schema loads")
}

/// A payload with all ten order fields that matches the orders schema.
pub const VALID_ORDER: &str = r#"{
    "id": "ORD-00012345",
    "sku": "ABC-123",
    "quantity": 2,
    "price": 19.99,
    "currency": "EUR",
    "customer": {"id": "c-42", "email": "ada@example.com", "name": "Ada Lovelace"},
    "created_at": "2026-12-04T21:05:00Z",
    "tags": ["gift", "express"],
    "status": "paid",
    "notes": null
}"#;

/// Returns [`VALID_ORDER`] with `field` set to the JSON text `value`.
pub fn order_with(field: &str, value: &str) -> String {
    let mut order: serde_json::Value = serde_json::from_str(VALID_ORDER).expect("fixture parses");
    order[field] = serde_json::from_str(value).expect("replacement value parses");
    order.to_string()
}
