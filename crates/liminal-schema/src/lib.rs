//! JSON Schema checks for Liminal channels.
//!
//! A [`ChannelSchema`] is loaded once, at broker startup, and then checks every message published
//! to its channel before the message reaches the channel actor. Each check is bounded by
//! [`SchemaLimits`], because payloads come from untrusted clients:
//! - payload size is checked before any byte is decoded;
//! - nesting depth is bounded by serde_json's recursion limit while parsing, and checked against
//!   the configured limit afterwards;
//! - numbers outside the `f64` range fail as invalid JSON instead of being rounded;
//! - regex `pattern`s run in linear time by default, or under a backtracking limit when a schema
//!   needs look-around or backreferences.
//!
//! Schema ids hash canonical JSON (see [`canonical`]), so two files that differ only in
//! whitespace or key order share an id.
//!
//! ```
//! use liminal_schema::{ChannelSchema, ValidationFailure};
//! use serde_json::json;
//!
//! let schema = ChannelSchema::from_value(
//!     "prices",
//!     json!({"type": "object", "properties": {"price": {"type": "number", "minimum": 0}}}),
//! )?;
//! assert!(schema.validate(br#"{"price": 3}"#).is_ok());
//!
//! let failure = schema.validate(br#"{"price": -3}"#).unwrap_err();
//! assert!(matches!(failure, ValidationFailure::Invalid { total: 1, .. }));
//! assert!(failure.to_string().ends_with("/price: -3 is less than the minimum of 0"));
//! # Ok::<(), liminal_schema::SchemaError>(())
//! ```

pub mod canonical;
mod depth;
mod error;
mod failure;
mod limits;
mod parse;
mod schema;

pub use canonical::{SCHEMA_ID_PREFIX, canonical_json, schema_id};
pub use error::SchemaError;
pub use failure::{MAX_REASON_CHARS, MAX_REPORTED_VIOLATIONS, ValidationFailure, Violation};
pub use limits::{PatternEngine, SERDE_JSON_MAX_DEPTH, SchemaLimits};
pub use schema::ChannelSchema;
