//! Resource limits applied while loading schemas and validating payloads.

/// Deepest nesting serde_json 1.x parses before it fails with "recursion limit exceeded".
///
/// serde_json starts its parser with a budget of 128 and fails on the container that would spend
/// the last unit, so 127 nested arrays or objects parse and 128 do not. The `serde_json_depth_cap`
/// test pins this number against the serde_json version in `Cargo.lock`.
pub const SERDE_JSON_MAX_DEPTH: usize = 127;

/// Limits that bound the work one schema or one payload can cause.
///
/// Schemas come from operators and payloads come from any publishing client, so the payload limits
/// are the ones that stand between a hostile client and the broker's CPU and stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaLimits {
    /// Max payload size in bytes. The default of 1 MiB matches the protocol's default max frame
    /// size, so only a broker configured with larger frames needs to raise it.
    pub max_payload_bytes: usize,
    /// Max nesting of arrays and objects in a payload, where a scalar has depth 0 and `[]` has
    /// depth 1. Values above [`SERDE_JSON_MAX_DEPTH`] are treated as that value, because the parser
    /// cannot go deeper. The default of 64 leaves room for realistic messages, which rarely pass 10
    /// levels, and bounds the recursion of the validator over the parsed value.
    pub max_payload_depth: usize,
    /// Max schema file size in bytes, checked before the file is read into memory.
    pub max_schema_bytes: u64,
    /// Max nesting of arrays and objects in a schema document, counted like `max_payload_depth`.
    /// Compiling and canonicalising a schema recurse over it, so this bounds their stack use.
    pub max_schema_depth: usize,
    /// Regex engine for `pattern` and `patternProperties`, which decides how long one match can run.
    pub pattern_engine: PatternEngine,
}

impl Default for SchemaLimits {
    fn default() -> Self {
        SchemaLimits {
            max_payload_bytes: 1024 * 1024,
            max_payload_depth: 64,
            max_schema_bytes: 1024 * 1024,
            max_schema_depth: 64,
            pattern_engine: PatternEngine::Linear,
        }
    }
}

impl SchemaLimits {
    /// Returns the payload depth limit that is enforced, which is at most [`SERDE_JSON_MAX_DEPTH`].
    pub fn effective_payload_depth(&self) -> usize {
        self.max_payload_depth.min(SERDE_JSON_MAX_DEPTH)
    }

    /// Returns the schema depth limit that is enforced, which is at most [`SERDE_JSON_MAX_DEPTH`].
    pub fn effective_schema_depth(&self) -> usize {
        self.max_schema_depth.min(SERDE_JSON_MAX_DEPTH)
    }
}

/// Regex engine that runs the `pattern` and `patternProperties` keywords of a schema.
///
/// A payload can hold many strings that a pattern checks, so the cost of one match is multiplied
/// by up to [`SchemaLimits::max_payload_bytes`] divided by the size of the smallest such string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternEngine {
    /// The `regex` crate, whose matching time grows linearly with the input length. It does not
    /// support look-around or backreferences, so a schema whose patterns use them fails to load
    /// with [`crate::SchemaError::InvalidSchema`].
    Linear,
    /// fancy-regex, the jsonschema 0.61 default, which adds look-around and backreferences.
    ///
    /// fancy-regex hands patterns without those features to the `regex` crate, and runs the rest
    /// on a backtracking VM. One match that takes more than `backtrack_limit` backtracking steps
    /// fails, and the payload is rejected with a `pattern` violation that names the limit.
    Backtracking {
        /// Max backtracking steps for one match.
        backtrack_limit: usize,
    },
}
