use super::*;

fn load(text: &str, variables: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("liminal.toml");
    std::fs::write(&path, text).unwrap();
    let variables = variables.iter().map(|(name, value)| (name.to_string(), value.to_string()));
    Settings::load_with_env(Some(&path), variables)
}

const MINIMAL: &str = r#"
listen_address = "127.0.0.1:7400"
health_listen_address = "127.0.0.1:7401"
persistence_path = "./data"
drain_timeout_ms = 5000
auto_create_channels = true
"#;

#[test]
fn embedded_default_loads() {
    let settings = Settings::load_with_env(None, Vec::new()).unwrap();
    assert_eq!(settings.server.listen_address.to_string(), "127.0.0.1:7400");
    assert!(settings.broker.auto_create_channels);
}

#[test]
fn unknown_key_is_named() {
    let error = load(&format!("{MINIMAL}\nlisten_adress = \"x\"\n"), &[]).unwrap_err();
    assert!(error.to_string().contains("listen_adress"), "{error}");
}

#[test]
fn unknown_channel_key_is_named() {
    let text = format!("{MINIMAL}\n[[channels]]\nname = \"a\"\ndurible = true\n");
    let error = load(&text, &[]).unwrap_err();
    assert!(error.to_string().contains("durible"), "{error}");
}

#[test]
fn env_override_wins_over_file() {
    let settings = load(MINIMAL, &[("LIMINAL_LISTEN_ADDRESS", "127.0.0.1:9999")]).unwrap();
    assert_eq!(settings.server.listen_address.port(), 9999);
}

#[test]
fn nested_env_override_applies() {
    let settings = load(MINIMAL, &[("LIMINAL_LIMITS_MAX_CONNECTIONS", "7"), ("LIMINAL_AUTH_TOKEN", "t0k")]).unwrap();
    assert_eq!(settings.broker.limits.max_connections, 7);
    assert_eq!(settings.broker.auth_token.as_deref(), Some("t0k"));
}

#[test]
fn invalid_env_override_names_variable() {
    let error = load(MINIMAL, &[("LIMINAL_DRAIN_TIMEOUT_MS", "soon")]).unwrap_err();
    assert!(error.to_string().contains("LIMINAL_DRAIN_TIMEOUT_MS"), "{error}");
}

#[test]
fn zero_limit_rejected_with_key() {
    let error = load(MINIMAL, &[("LIMINAL_LIMITS_MAX_CONNECTIONS", "0")]).unwrap_err();
    assert!(error.to_string().contains("limits.max_connections"), "{error}");
}

#[test]
fn same_port_for_health_rejected() {
    let error = load(MINIMAL, &[("LIMINAL_HEALTH_LISTEN_ADDRESS", "127.0.0.1:7400")]).unwrap_err();
    assert!(error.to_string().contains("health_listen_address"), "{error}");
}

#[test]
fn bad_address_names_key() {
    let error = load(MINIMAL, &[("LIMINAL_LISTEN_ADDRESS", "localhost")]).unwrap_err();
    assert!(error.to_string().contains("listen_address"), "{error}");
}

#[test]
fn duplicate_channel_rejected() {
    let text = format!("{MINIMAL}\n[[channels]]\nname = \"a\"\n[[channels]]\nname = \"a\"\n");
    let error = load(&text, &[]).unwrap_err();
    assert!(error.to_string().contains("declared twice"), "{error}");
}

#[test]
fn unknown_variable_reported() {
    let settings = load(MINIMAL, &[("LIMINAL_LISTEN_ADDR", "x"), ("LIMINAL_SERVER", "y")]).unwrap();
    assert_eq!(settings.unknown_variables, vec!["LIMINAL_LISTEN_ADDR".to_owned()]);
}

#[test]
fn redacted_toml_hides_token() {
    let settings = load(MINIMAL, &[("LIMINAL_AUTH_TOKEN", "very-secret")]).unwrap();
    let rendered = settings.redacted_toml();
    assert!(!rendered.contains("very-secret"));
    assert!(rendered.contains("<redacted>"));
}

#[test]
fn wrong_type_names_key() {
    let error = load(&format!("{MINIMAL}\n[limits]\nmax_connections = \"lots\"\n"), &[]).unwrap_err();
    assert!(error.to_string().contains("limits.max_connections"), "{error}");
}

#[test]
fn negative_env_override_names_variable() {
    let error = load(MINIMAL, &[("LIMINAL_DRAIN_TIMEOUT_MS", "-1")]).unwrap_err();
    assert!(error.to_string().contains("LIMINAL_DRAIN_TIMEOUT_MS"), "{error}");
}

#[test]
fn tiny_frame_limit_rejected() {
    let error = load(MINIMAL, &[("LIMINAL_LIMITS_MAX_FRAME_BYTES", "1")]).unwrap_err();
    assert!(error.to_string().contains("limits.max_frame_bytes"), "{error}");
}

#[test]
fn retention_on_ephemeral_names_value() {
    let error = load(&format!("{MINIMAL}\n[[channels]]\nname = \"a\"\nmax_messages = 5\n"), &[]).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("channels[0].max_messages"), "{text}");
    assert!(text.contains("\"5\""), "{text}");
}

#[test]
fn schema_validation_threads_override_applies() {
    assert_eq!(load(MINIMAL, &[]).unwrap().broker.schema_validation_threads, 0);
    let settings = load(MINIMAL, &[("LIMINAL_SCHEMA_VALIDATION_THREADS", "3")]).unwrap();
    assert_eq!(settings.broker.schema_validation_threads, 3);
}

#[test]
fn too_many_schema_validation_threads_rejected() {
    let error = load(&format!("{MINIMAL}\nschema_validation_threads = 5000\n"), &[]).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("schema_validation_threads"), "{message}");
    assert!(message.contains("5000"), "{message}");
}

#[test]
fn redacted_toml_shows_defaults_and_reloads() {
    let text = format!("{MINIMAL}slow_consumer = \"disconnect\"\n[[channels]]\nname = \"a\"\n");
    let rendered = load(&text, &[]).unwrap().redacted_toml();
    assert!(rendered.contains("server_id = \"liminal\""), "{rendered}");
    assert!(rendered.contains("slow_consumer = \"disconnect\"\ndedup_window = \"2m\""), "{rendered}");

    let reloaded = load(&rendered, &[]).unwrap();
    assert_eq!(reloaded.redacted_toml(), rendered, "the rendered configuration loads as it is");
}

#[test]
fn invalid_override_value_names_variable() {
    let error = load(MINIMAL, &[("LIMINAL_AUTH_TOKEN", "")]).unwrap_err().to_string();
    assert!(error.contains("auth.token"), "{error}");
    assert!(error.contains("LIMINAL_AUTH_TOKEN"), "{error}");

    let error = load(&format!("{MINIMAL}[auth]\ntoken = \"\"\n"), &[]).unwrap_err().to_string();
    assert!(!error.contains("LIMINAL_"), "a value from the file is not blamed on a variable: {error}");
}

