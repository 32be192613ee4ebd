//! `LIMINAL_*` environment overrides, applied to the parsed TOML table
//! before it is validated, so an override is checked exactly like the file.

use toml::{Table, Value};

use crate::config::ConfigError;

/// The type an override is parsed as.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    String,
    Integer,
    Boolean,
}

/// Every supported override: variable name, key path in the file, type.
pub const OVERRIDES: &[(&str, &[&str], Kind)] = &[
    ("LIMINAL_LISTEN_ADDRESS", &["listen_address"], Kind::String),
    ("LIMINAL_HEALTH_LISTEN_ADDRESS", &["health_listen_address"], Kind::String),
    ("LIMINAL_PERSISTENCE_PATH", &["persistence_path"], Kind::String),
    ("LIMINAL_DRAIN_TIMEOUT_MS", &["drain_timeout_ms"], Kind::Integer),
    ("LIMINAL_AUTO_CREATE_CHANNELS", &["auto_create_channels"], Kind::Boolean),
    ("LIMINAL_SERVER_ID", &["server_id"], Kind::String),
    ("LIMINAL_FAULT_INJECTION", &["fault_injection"], Kind::Boolean),
    ("LIMINAL_SLOW_CONSUMER", &["slow_consumer"], Kind::String),
    ("LIMINAL_FSYNC", &["fsync"], Kind::String),
    ("LIMINAL_FSYNC_INTERVAL_MS", &["fsync_interval_ms"], Kind::Integer),
    ("LIMINAL_SCHEMA_VALIDATION_THREADS", &["schema_validation_threads"], Kind::Integer),
    ("LIMINAL_LIMITS_MAX_CONNECTIONS", &["limits", "max_connections"], Kind::Integer),
    (
        "LIMINAL_LIMITS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        &["limits", "max_subscriptions_per_connection"],
        Kind::Integer,
    ),
    (
        "LIMINAL_LIMITS_MAX_CONVERSATIONS_PER_CONNECTION",
        &["limits", "max_conversations_per_connection"],
        Kind::Integer,
    ),
    ("LIMINAL_LIMITS_MAX_FRAME_BYTES", &["limits", "max_frame_bytes"], Kind::Integer),
    ("LIMINAL_LIMITS_MAX_OUTBOUND_BYTES", &["limits", "max_outbound_bytes"], Kind::Integer),
    ("LIMINAL_LIMITS_MAX_INFLIGHT_PUBLISHES", &["limits", "max_inflight_publishes"], Kind::Integer),
    ("LIMINAL_LIMITS_WRITE_TIMEOUT_MS", &["limits", "write_timeout_ms"], Kind::Integer),
    ("LIMINAL_LIMITS_HELLO_TIMEOUT_MS", &["limits", "hello_timeout_ms"], Kind::Integer),
    ("LIMINAL_SUPERVISION_MAX_RESTARTS", &["supervision", "max_restarts"], Kind::Integer),
    ("LIMINAL_SUPERVISION_RESTART_WINDOW_MS", &["supervision", "restart_window_ms"], Kind::Integer),
    ("LIMINAL_AUTH_TOKEN", &["auth", "token"], Kind::String),
    (
        "LIMINAL_CONVERSATIONS_UNKNOWN_SUBJECT",
        &["conversations", "unknown_subject"],
        Kind::String,
    ),
    ("LIMINAL_CONVERSATIONS_PREFER", &["conversations", "prefer"], Kind::String),
    (
        "LIMINAL_CONVERSATIONS_MAX_QUEUED_MESSAGES",
        &["conversations", "max_queued_messages"],
        Kind::Integer,
    ),
    (
        "LIMINAL_CONVERSATIONS_IDLE_TIMEOUT_MS",
        &["conversations", "idle_timeout_ms"],
        Kind::Integer,
    ),
    ("LIMINAL_CONVERSATIONS_CRASH_POLICY", &["conversations", "crash_policy"], Kind::String),
];

/// Variables with the `LIMINAL_` prefix that belong to the CLI, not the server.
const CLIENT_VARIABLES: &[&str] = &["LIMINAL_SERVER", "LIMINAL_TOKEN", "LIMINAL_HEALTH"];

/// Outcome of applying the environment to the configuration.
#[derive(Debug, Default)]
pub struct AppliedOverrides {
    /// `LIMINAL_*` variables that match no override, probably typos.
    pub unknown: Vec<String>,
    /// Each applied variable with the dotted key it set, for error messages.
    pub applied: Vec<(String, String)>,
}

impl AppliedOverrides {
    /// Returns the variable that set `key`, if one did.
    pub fn variable_for(&self, key: &str) -> Option<&str> {
        self.applied
            .iter()
            .find(|(_, applied_key)| applied_key == key)
            .map(|(variable, _)| variable.as_str())
    }
}

/// Applies overrides from `variables` (the process environment in
/// production) to `table`.
pub fn apply_overrides(
    table: &mut Table,
    variables: impl IntoIterator<Item = (String, String)>,
) -> Result<AppliedOverrides, ConfigError> {
    let mut overrides = AppliedOverrides::default();
    for (name, raw) in variables {
        if !name.starts_with("LIMINAL_") || CLIENT_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let Some((_, path, kind)) = OVERRIDES.iter().find(|(known, ..)| *known == name) else {
            overrides.unknown.push(name);
            continue;
        };
        let value = parse(&name, &raw, *kind)?;
        set_path(table, path, value);
        overrides.applied.push((name, path.join(".")));
    }
    Ok(overrides)
}

fn parse(name: &str, raw: &str, kind: Kind) -> Result<Value, ConfigError> {
    let invalid = |expected: &str| ConfigError::InvalidOverride {
        variable: name.to_owned(),
        value: raw.to_owned(),
        expected: expected.to_owned(),
    };
    match kind {
        Kind::String => Ok(Value::String(raw.to_owned())),
        Kind::Integer => raw
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|value| i64::try_from(value).ok())
            .map(Value::Integer)
            .ok_or_else(|| invalid("a non-negative integer")),
        Kind::Boolean => match raw.trim() {
            "true" | "1" => Ok(Value::Boolean(true)),
            "false" | "0" => Ok(Value::Boolean(false)),
            _ => Err(invalid("true or false (or 1 or 0)")),
        },
    }
}

fn set_path(table: &mut Table, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("override paths are never empty");
    let mut current = table;
    for key in parents {
        let entry = current
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        current = entry.as_table_mut().expect("just made a table");
    }
    current.insert((*last).to_owned(), value);
}
