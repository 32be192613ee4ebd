//! A compiled channel schema and the payload check the broker runs on publish.

use crate::canonical::schema_id;
use crate::depth::value_exceeds_depth;
use crate::error::SchemaError;
use crate::failure::{MAX_REPORTED_VIOLATIONS, ValidationFailure, Violation};
use crate::limits::{PatternEngine, SchemaLimits};
use crate::parse::{JsonTextError, parse_bounded};
use jsonschema::{PatternOptions, Validator};
use serde_json::Value;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

/// A compiled JSON Schema for the messages of one channel.
///
/// The schema's `$schema` keyword selects the draft, and draft 2020-12 applies when it is absent.
/// Compilation makes these choices, which differ from the jsonschema crate's defaults:
/// - `format` is asserted, so a `date-time` field must hold an RFC 3339 timestamp;
/// - `$ref` resolves only inside the schema document, and a reference to any other document is
///   rejected at load time, so loading never reads files or touches the network;
/// - `pattern` regexes run on the engine that [`SchemaLimits::pattern_engine`] selects.
///
/// The type is `Send + Sync` and never mutated after construction, so one instance in an `Arc`
/// serves every publishing connection.
#[derive(Debug)]
pub struct ChannelSchema {
    id: Arc<str>,
    name: String,
    limits: SchemaLimits,
    validator: Validator,
}

impl ChannelSchema {
    /// Loads a schema file with [`SchemaLimits::default`].
    ///
    /// # Errors
    ///
    /// Returns [`SchemaError`] when the file is missing, unreadable, too large, not JSON, nested too
    /// deep, or not a valid schema.
    pub fn load(path: &Path) -> Result<ChannelSchema, SchemaError> {
        ChannelSchema::load_with_limits(path, SchemaLimits::default())
    }

    /// Loads, parses and compiles a schema file. The path, as displayed, names the schema in
    /// errors and logs.
    ///
    /// # Errors
    ///
    /// As for [`ChannelSchema::load`].
    pub fn load_with_limits(
        path: &Path,
        limits: SchemaLimits,
    ) -> Result<ChannelSchema, SchemaError> {
        let text = read_limited(path, limits.max_schema_bytes)?;
        let name = path.display().to_string();

        let depth_limit = limits.effective_schema_depth();
        let schema = parse_bounded(&text, depth_limit).map_err(|error| match error {
            JsonTextError::TooDeep { limit } => SchemaError::TooDeep {
                name: name.clone(),
                limit,
            },
            JsonTextError::NotJson {
                line,
                column,
                reason,
            } => SchemaError::NotJson {
                name: name.clone(),
                line,
                column,
                reason,
            },
        })?;
        ChannelSchema::from_value_with_limits(&name, schema, limits)
    }

    /// Compiles an already parsed schema with [`SchemaLimits::default`]. `name` stands for the
    /// schema in errors and logs.
    ///
    /// # Errors
    ///
    /// Returns [`SchemaError::TooDeep`] or [`SchemaError::InvalidSchema`].
    pub fn from_value(name: &str, schema: Value) -> Result<ChannelSchema, SchemaError> {
        ChannelSchema::from_value_with_limits(name, schema, SchemaLimits::default())
    }

    /// Compiles an already parsed schema. `name` stands for the schema in errors and logs.
    ///
    /// # Errors
    ///
    /// As for [`ChannelSchema::from_value`].
    pub fn from_value_with_limits(
        name: &str,
        schema: Value,
        limits: SchemaLimits,
    ) -> Result<ChannelSchema, SchemaError> {
        // Compiling and canonicalising recurse over the schema, so the depth check comes first.
        let depth_limit = limits.effective_schema_depth();
        if value_exceeds_depth(&schema, depth_limit) {
            return Err(SchemaError::TooDeep {
                name: name.to_owned(),
                limit: depth_limit,
            });
        }

        let options = jsonschema::options()
            .offline()
            .should_validate_formats(true);
        let options = match limits.pattern_engine {
            PatternEngine::Linear => options.with_pattern_options(PatternOptions::regex()),
            PatternEngine::Backtracking { backtrack_limit } => options.with_pattern_options(
                PatternOptions::fancy_regex().backtrack_limit(backtrack_limit),
            ),
        };
        let validator = options
            .build(&schema)
            .map_err(|error| SchemaError::InvalidSchema {
                name: name.to_owned(),
                reason: describe_compile_error(&error),
            })?;

        let id: Arc<str> = Arc::from(schema_id(&schema));
        tracing::info!(
            schema = name,
            schema_id = %id,
            draft = ?validator.draft(),
            "loaded channel schema"
        );
        Ok(ChannelSchema {
            id,
            name: name.to_owned(),
            limits,
            validator,
        })
    }

    /// Returns the stable schema id: `sha256:` and the hex SHA-256 digest of the schema's
    /// canonical JSON, described in [`crate::canonical`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Returns the file path or caller-chosen name the schema was loaded under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the limits this schema was loaded with and validates under.
    pub fn limits(&self) -> &SchemaLimits {
        &self.limits
    }

    /// Checks that `payload` is UTF-8 JSON that matches the schema.
    ///
    /// Checks run in this order and stop at the first failure: size, UTF-8, nesting depth, JSON
    /// syntax, schema. An accepted payload is read twice, once for UTF-8 and once by the parser.
    ///
    /// # Errors
    ///
    /// Returns the [`ValidationFailure`] variant of the first check that failed.
    pub fn validate(&self, payload: &[u8]) -> Result<(), ValidationFailure> {
        let result = self.check(payload);
        if let Err(failure) = &result {
            tracing::debug!(
                schema_id = %self.id,
                failure = failure.kind_name(),
                payload_bytes = payload.len(),
                "payload rejected by channel schema"
            );
        }
        result
    }

    fn check(&self, payload: &[u8]) -> Result<(), ValidationFailure> {
        let size_limit = self.limits.max_payload_bytes;
        if payload.len() > size_limit {
            return Err(ValidationFailure::TooLarge {
                size: payload.len(),
                limit: size_limit,
            });
        }

        if let Err(error) = std::str::from_utf8(payload) {
            return Err(ValidationFailure::NotUtf8 {
                valid_up_to: error.valid_up_to(),
            });
        }

        let depth_limit = self.limits.effective_payload_depth();
        let instance = parse_bounded(payload, depth_limit).map_err(|error| match error {
            JsonTextError::TooDeep { limit } => ValidationFailure::TooDeep { limit },
            JsonTextError::NotJson {
                line,
                column,
                reason,
            } => ValidationFailure::NotJson {
                line,
                column,
                reason,
            },
        })?;

        // `is_valid` skips building error values, which keeps the accepting path cheap.
        if self.validator.is_valid(&instance) {
            return Ok(());
        }
        Err(self.collect_violations(&instance, payload.len()))
    }

    /// Lists the violations of an instance that failed `is_valid`.
    ///
    /// jsonschema 0.61 collects every error before its iterator yields the first one, so the cost
    /// of a full list grows with the number of violations: a 1 MiB array of wrong-typed items
    /// yields about 500,000 errors and takes about 200 ms. Payloads above
    /// [`FULL_REPORT_MAX_BYTES`] therefore report only the first violation, which `validate`
    /// finds without building the others.
    fn collect_violations(&self, instance: &Value, payload_bytes: usize) -> ValidationFailure {
        let mut violations = Vec::with_capacity(MAX_REPORTED_VIOLATIONS);
        if payload_bytes > FULL_REPORT_MAX_BYTES {
            if let Err(error) = self.validator.validate(instance) {
                violations.push(Violation::from_error(&error));
            }
            let total = violations.len();
            return ValidationFailure::Invalid {
                schema_id: Arc::clone(&self.id),
                violations,
                total,
            };
        }
        let mut total = 0usize;
        for error in self.validator.iter_errors(instance) {
            if violations.len() < MAX_REPORTED_VIOLATIONS {
                violations.push(Violation::from_error(&error));
            }
            total += 1;
        }

        ValidationFailure::Invalid {
            schema_id: Arc::clone(&self.id),
            violations,
            total,
        }
    }
}

/// Largest payload whose violations are all counted; larger ones report the first only.
pub const FULL_REPORT_MAX_BYTES: usize = 64 * 1024;

/// Reads at most `limit` bytes of the file at `path`, failing if it contains more.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, SchemaError> {
    let unreadable = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            SchemaError::NotFound {
                path: path.to_owned(),
            }
        } else {
            SchemaError::Unreadable {
                path: path.to_owned(),
                source,
            }
        }
    };
    let too_large = || SchemaError::TooLarge {
        path: path.to_owned(),
        limit,
    };

    let file = File::open(path).map_err(unreadable)?;
    let size = file.metadata().map_err(unreadable)?.len();
    if size > limit {
        return Err(too_large());
    }

    // The file may grow between the size check and the read, so the read stops one byte past the
    // limit and the length is checked again.
    let mut text = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut text)
        .map_err(unreadable)?;
    if text.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(text)
}

/// Formats a compile error with the location inside the schema that caused it.
fn describe_compile_error(error: &jsonschema::ValidationError<'_>) -> String {
    let location = error.instance_path().as_str();
    if location.is_empty() {
        error.to_string()
    } else {
        format!("{error} (at {location})")
    }
}
