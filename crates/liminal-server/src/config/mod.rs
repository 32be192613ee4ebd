//! Loading and validating the server configuration.
//!
//! Order: read the file (or the embedded default, which is the shipped
//! `config/liminal.toml` itself), apply `LIMINAL_*` overrides to the parsed
//! table, deserialize strictly, then validate values. Each failure names the
//! key (or variable) and the value.

pub mod env;
pub mod file;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use liminal_schema::{ChannelSchema, SchemaLimits};

use liminal_broker::{
    FsyncPolicy, PersistenceConfig,
    BrokerConfig, ChannelConfig, ConversationsConfig, CrashPolicy, Limits, ResponderPreference, RestartIntensity,
    RetentionConfig, SlowConsumerPolicy, UnknownSubjectPolicy,
};

pub use file::ConfigFile;

/// The shipped default configuration, compiled into the binary.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../../config/liminal.toml");

/// Configuration errors; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("environment variable {variable}={value:?} is invalid: expected {expected}")]
    InvalidOverride {
        variable: String,
        value: String,
        expected: String,
    },
    #[error("config key `{key}` of channel \"{channel}\": {reason}")]
    Schema { key: String, channel: String, reason: String },
    #[error("config key `{key}` has invalid value {value:?}: {reason}")]
    InvalidValue { key: String, value: String, reason: String },
}

fn invalid(key: &str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Server-level settings that are not the broker's business.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen_address: SocketAddr,
    pub health_listen_address: SocketAddr,
    pub persistence_path: PathBuf,
    pub drain_timeout: Duration,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the configuration came from, for logs.
    pub origin: String,
    pub file: ConfigFile,
    pub server: ServerSettings,
    pub broker: BrokerConfig,
    /// `LIMINAL_*` variables that match no override (probably typos).
    pub unknown_variables: Vec<String>,
}

impl Settings {
    /// Loads `path`, or the embedded default when `None`, with overrides
    /// from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load_with_env(path, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment given explicitly.
    pub fn load_with_env(
        path: Option<&Path>,
        variables: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let (origin, text, base_dir) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let base = path.parent().map(Path::to_owned).unwrap_or_default();
                (path.display().to_string(), text, base)
            }
            None => ("(embedded default)".to_owned(), EMBEDDED_DEFAULT.to_owned(), PathBuf::new()),
        };
        let parse_error = |message: String| ConfigError::Parse {
            origin: origin.clone(),
            message,
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(|error| parse_error(error.to_string()))?;
        let overrides = env::apply_overrides(&mut table, variables)?;
        // serde_path_to_error names the key of a value with the wrong type,
        // which the TOML error alone does not once the table is parsed.
        let file: ConfigFile = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|error| {
            let key = error.path().to_string();
            let message = error.into_inner().message().to_owned();
            if key == "." || key.is_empty() {
                parse_error(message)
            } else {
                parse_error(format!("config key `{key}`: {message}"))
            }
        })?;
        let name_variable = |error| name_override_variable(error, &overrides);
        let server = server_settings(&file).map_err(name_variable)?;
        let broker = broker_config(&file, &base_dir).map_err(name_variable)?;
        Ok(Settings {
            origin,
            file,
            server,
            broker,
            unknown_variables: overrides.unknown,
        })
    }

    /// The effective configuration as TOML, with secrets redacted.
    pub fn redacted_toml(&self) -> String {
        let mut file = self.file.clone();
        if file.auth.token.is_some() {
            file.auth.token = Some("<redacted>".to_owned());
        }
        // Keys left out of the file are shown with the value the server uses.
        file.server_id = Some(self.broker.server_id.clone());
        for channel in &mut file.channels {
            channel.slow_consumer.get_or_insert_with(|| file.slow_consumer.clone());
            channel
                .dedup_window
                .get_or_insert_with(|| humantime::format_duration(liminal_broker::config::DEFAULT_DEDUP_WINDOW).to_string());
        }
        toml::to_string_pretty(&file).unwrap_or_else(|error| format!("# failed to render config: {error}\n"))
    }
}

/// Adds the environment variable that set an invalid key to its error, so
/// the message points at the variable and not at a file without that key.
fn name_override_variable(error: ConfigError, overrides: &env::AppliedOverrides) -> ConfigError {
    match error {
        ConfigError::InvalidValue { key, value, reason } => {
            let reason = match overrides.variable_for(&key) {
                Some(variable) => format!("{reason} (the value comes from the environment variable {variable})"),
                None => reason,
            };
            ConfigError::InvalidValue { key, value, reason }
        }
        other => other,
    }
}

fn socket_address(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(key, value, "expected IP:PORT, for example 127.0.0.1:7400"))
}

fn server_settings(file: &ConfigFile) -> Result<ServerSettings, ConfigError> {
    let listen_address = socket_address("listen_address", &file.listen_address)?;
    let health_listen_address = socket_address("health_listen_address", &file.health_listen_address)?;
    if listen_address == health_listen_address && listen_address.port() != 0 {
        return Err(invalid(
            "health_listen_address",
            &file.health_listen_address,
            "must differ from listen_address",
        ));
    }
    if file.drain_timeout_ms == 0 {
        return Err(invalid("drain_timeout_ms", 0, "must be at least 1"));
    }
    if file.persistence_path.trim().is_empty() {
        return Err(invalid("persistence_path", &file.persistence_path, "must not be empty"));
    }
    Ok(ServerSettings {
        listen_address,
        health_listen_address,
        persistence_path: PathBuf::from(&file.persistence_path),
        drain_timeout: Duration::from_millis(file.drain_timeout_ms),
    })
}

fn positive(key: &str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(invalid(key, value, "must be at least 1"));
    }
    Ok(value)
}

fn slow_consumer_policy(key: &str, value: &str) -> Result<SlowConsumerPolicy, ConfigError> {
    match value {
        "drop" => Ok(SlowConsumerPolicy::Drop),
        "disconnect" => Ok(SlowConsumerPolicy::Disconnect),
        _ => Err(invalid(key, value, "expected \"drop\" or \"disconnect\"")),
    }
}

fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let parsed = humantime::parse_duration(value)
        .map_err(|error| invalid(key, value, format!("{error}; use a duration such as \"90s\", \"2m\" or \"24h\"")))?;
    if parsed.is_zero() {
        return Err(invalid(key, value, "must be longer than zero"));
    }
    Ok(parsed)
}

/// Smallest accepted `limits.max_frame_bytes`: room for a `Hello` with a
/// long client name and token, and for small messages.
const MIN_FRAME_BYTES: u64 = 1024;

fn limits(file: &ConfigFile) -> Result<Limits, ConfigError> {
    let limits = &file.limits;
    let max_frame_bytes = positive("limits.max_frame_bytes", limits.max_frame_bytes)?;
    if max_frame_bytes < MIN_FRAME_BYTES {
        return Err(invalid(
            "limits.max_frame_bytes",
            max_frame_bytes,
            format!("must be at least {MIN_FRAME_BYTES}, or no client can even send Hello"),
        ));
    }
    if max_frame_bytes > u64::from(u32::MAX) {
        return Err(invalid("limits.max_frame_bytes", max_frame_bytes, "must fit in 32 bits"));
    }
    Ok(Limits {
        max_connections: positive("limits.max_connections", limits.max_connections)? as usize,
        max_subscriptions_per_connection: positive(
            "limits.max_subscriptions_per_connection",
            limits.max_subscriptions_per_connection,
        )? as usize,
        max_conversations_per_connection: positive(
            "limits.max_conversations_per_connection",
            limits.max_conversations_per_connection,
        )? as usize,
        max_frame_bytes: max_frame_bytes as u32,
        max_outbound_bytes: positive("limits.max_outbound_bytes", limits.max_outbound_bytes)? as usize,
        max_inflight_publishes: positive("limits.max_inflight_publishes", limits.max_inflight_publishes)? as usize,
        write_timeout: Duration::from_millis(positive("limits.write_timeout_ms", limits.write_timeout_ms)?),
        hello_timeout: Duration::from_millis(positive("limits.hello_timeout_ms", limits.hello_timeout_ms)?),
    })
}

fn channel_config(
    index: usize,
    channel: &file::ChannelFile,
    base_dir: &Path,
    max_frame_bytes: u64,
) -> Result<ChannelConfig, ConfigError> {
    let key = |field: &str| format!("channels[{index}].{field}");
    liminal_broker::names::validate_channel_name(&channel.name)
        .map_err(|reason| invalid(&key("name"), &channel.name, reason))?;
    let slow_consumer = channel
        .slow_consumer
        .as_deref()
        .map(|value| slow_consumer_policy(&key("slow_consumer"), value))
        .transpose()?;
    let dedup_window = match &channel.dedup_window {
        Some(value) => duration(&key("dedup_window"), value)?,
        None => liminal_broker::config::DEFAULT_DEDUP_WINDOW,
    };
    let max_age = channel
        .max_age
        .as_deref()
        .map(|value| duration(&key("max_age"), value))
        .transpose()?;
    if let Some(value) = channel.max_messages {
        positive(&key("max_messages"), value)?;
    }
    if let Some(value) = channel.max_bytes {
        positive(&key("max_bytes"), value)?;
    }
    let has_retention = channel.max_messages.is_some() || channel.max_bytes.is_some() || max_age.is_some();
    if has_retention && !channel.durable {
        let (field, value) = match (channel.max_messages, channel.max_bytes, &channel.max_age) {
            (Some(value), _, _) => ("max_messages", value.to_string()),
            (None, Some(value), _) => ("max_bytes", value.to_string()),
            (None, None, age) => ("max_age", age.clone().unwrap_or_default()),
        };
        return Err(invalid(
            &key(field),
            value,
            format!(
                "retention limits apply only to durable channels, and channel \"{}\" is ephemeral; set durable = true or remove the limit",
                channel.name
            ),
        ));
    }
    let schema = match &channel.schema {
        Some(relative) => {
            // Absolute, so errors and logs name the file that was looked for
            // even when the config file was given by a relative path.
            let path = base_dir.join(relative);
            let path = std::path::absolute(&path).unwrap_or(path);
            // A payload is never larger than the frame that carries it, so the frame limit is
            // the payload limit too. The schema crate's own default would cap it at 1 MiB.
            let limits = SchemaLimits {
                max_payload_bytes: usize::try_from(max_frame_bytes).unwrap_or(usize::MAX),
                ..SchemaLimits::default()
            };
            let schema = ChannelSchema::load_with_limits(&path, limits).map_err(|error| ConfigError::Schema {
                key: key("schema"),
                channel: channel.name.clone(),
                reason: error.to_string(),
            })?;
            Some(Arc::new(schema))
        }
        None => None,
    };
    Ok(ChannelConfig {
        name: channel.name.clone(),
        durable: channel.durable,
        retention: RetentionConfig {
            max_messages: channel.max_messages,
            max_bytes: channel.max_bytes,
            max_age,
        },
        slow_consumer,
        dedup_window,
        schema,
    })
}

fn broker_config(file: &ConfigFile, base_dir: &Path) -> Result<BrokerConfig, ConfigError> {
    let mut names = HashSet::new();
    let mut channels = Vec::new();
    for (index, channel) in file.channels.iter().enumerate() {
        if !names.insert(channel.name.clone()) {
            return Err(invalid(&format!("channels[{index}].name"), &channel.name, "is declared twice"));
        }
        channels.push(channel_config(index, channel, base_dir, file.limits.max_frame_bytes)?);
    }
    let max_restarts = positive("supervision.max_restarts", file.supervision.max_restarts)?;
    let window = positive("supervision.restart_window_ms", file.supervision.restart_window_ms)?;
    if let Some(token) = &file.auth.token {
        if token.is_empty() {
            return Err(invalid("auth.token", "", "must not be empty; remove the key to disable auth"));
        }
    }
    let persistence = persistence(file, &channels)?;
    Ok(BrokerConfig {
        server_id: file.server_id.clone().unwrap_or_else(|| "liminal".to_owned()),
        channels,
        auto_create_channels: file.auto_create_channels,
        restart_intensity: RestartIntensity {
            max_restarts: max_restarts.min(u64::from(u32::MAX)) as u32,
            within: Duration::from_millis(window),
        },
        limits: limits(file)?,
        slow_consumer: slow_consumer_policy("slow_consumer", &file.slow_consumer)?,
        auth_token: file.auth.token.clone(),
        fault_injection: file.fault_injection,
        conversations: conversations_config(&file.conversations)?,
        persistence,
        schema_validation_threads: schema_validation_threads(file.schema_validation_threads)?,
    })
}

/// Maximum of `schema_validation_threads`. Far more threads than cores only add context switches.
const MAX_SCHEMA_VALIDATION_THREADS: u64 = 1024;

fn schema_validation_threads(threads: u64) -> Result<usize, ConfigError> {
    if threads > MAX_SCHEMA_VALIDATION_THREADS {
        return Err(invalid(
            "schema_validation_threads",
            threads,
            format!("must be at most {MAX_SCHEMA_VALIDATION_THREADS}; use 0 for one thread per CPU core"),
        ));
    }
    Ok(threads as usize)
}

/// The store settings, when any channel is durable. The store lives in the
/// `store` directory below `persistence_path`, which is relative to the
/// working directory.
fn persistence(file: &ConfigFile, channels: &[ChannelConfig]) -> Result<Option<PersistenceConfig>, ConfigError> {
    let fsync = match file.fsync.as_str() {
        "always" => FsyncPolicy::Always,
        "interval" => FsyncPolicy::Interval(Duration::from_millis(positive(
            "fsync_interval_ms",
            file.fsync_interval_ms,
        )?)),
        "never" => FsyncPolicy::Never,
        other => return Err(invalid("fsync", other, "expected \"always\", \"interval\" or \"never\"")),
    };
    if !channels.iter().any(|channel| channel.durable) {
        return Ok(None);
    }
    Ok(Some(PersistenceConfig {
        path: PathBuf::from(&file.persistence_path).join("store"),
        fsync,
    }))
}

fn crash_policy(key: &str, value: &str) -> Result<CrashPolicy, ConfigError> {
    match value {
        "fail" => Ok(CrashPolicy::Fail),
        "restart" => Ok(CrashPolicy::Restart),
        _ => Err(invalid(key, value, "expected \"fail\" or \"restart\"")),
    }
}

fn conversations_config(file: &file::ConversationsFile) -> Result<ConversationsConfig, ConfigError> {
    let unknown_subject = match file.unknown_subject.as_str() {
        "echo" => UnknownSubjectPolicy::Echo,
        "reject" => UnknownSubjectPolicy::Reject,
        other => {
            return Err(invalid(
                "conversations.unknown_subject",
                other,
                "expected \"echo\" or \"reject\"",
            ));
        }
    };
    let prefer = match file.prefer.as_str() {
        "in_process" => ResponderPreference::InProcess,
        "remote" => ResponderPreference::Remote,
        other => {
            return Err(invalid(
                "conversations.prefer",
                other,
                "expected \"in_process\" or \"remote\"",
            ));
        }
    };
    let mut crash_policies = std::collections::BTreeMap::new();
    for (subject, value) in &file.crash_policies {
        let key = format!("conversations.crash_policies.{subject}");
        liminal_broker::names::validate_subject(subject).map_err(|reason| invalid(&key, subject, reason))?;
        crash_policies.insert(subject.clone(), crash_policy(&key, value)?);
    }
    Ok(ConversationsConfig {
        unknown_subject,
        prefer,
        max_queued_messages: positive("conversations.max_queued_messages", file.max_queued_messages)? as usize,
        idle_timeout: Duration::from_millis(positive("conversations.idle_timeout_ms", file.idle_timeout_ms)?),
        default_crash_policy: crash_policy("conversations.crash_policy", &file.crash_policy)?,
        crash_policies,
    })
}

#[cfg(test)]
mod tests;
