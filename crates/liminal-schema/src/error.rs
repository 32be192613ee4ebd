//! Errors raised while loading and compiling a channel schema.

use std::io;
use std::path::PathBuf;

/// Reason a schema could not be loaded. Each variant names the schema: its file path, or the name
/// the caller passed to [`crate::ChannelSchema::from_value`].
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The schema file does not exist.
    #[error("schema file {} not found", path.display())]
    NotFound {
        /// Path that was opened.
        path: PathBuf,
    },
    /// The schema file exists but could not be read.
    #[error("failed to read schema file {}: {source}", path.display())]
    Unreadable {
        /// Path that was opened.
        path: PathBuf,
        /// Error from the file system.
        source: io::Error,
    },
    /// The schema file is larger than [`crate::SchemaLimits::max_schema_bytes`].
    #[error(
        "schema file {} is larger than the limit of {limit} bytes; \
         split the schema or raise the schema size limit",
        path.display()
    )]
    TooLarge {
        /// Path that was opened.
        path: PathBuf,
        /// Limit in bytes.
        limit: u64,
    },
    /// The schema text is not valid JSON.
    #[error("schema {name} is not valid JSON at line {line}, column {column}: {reason}")]
    NotJson {
        /// File path or caller-chosen name of the schema.
        name: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// Parser message, without the position.
        reason: String,
    },
    /// The schema nests arrays and objects deeper than
    /// [`crate::SchemaLimits::max_schema_depth`].
    #[error("schema {name} nests arrays and objects deeper than the limit of {limit} levels")]
    TooDeep {
        /// File path or caller-chosen name of the schema.
        name: String,
        /// Depth limit that was enforced.
        limit: usize,
    },
    /// The document is JSON but not a valid JSON Schema, or it references a schema that cannot
    /// be resolved offline.
    #[error("schema {name} is not a valid JSON Schema: {reason}")]
    InvalidSchema {
        /// File path or caller-chosen name of the schema.
        name: String,
        /// Compile error from the jsonschema crate, with the location inside the schema.
        reason: String,
    },
}
