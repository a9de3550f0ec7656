//! Tests of the layered configuration loader and the common checks.

use super::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct Demo {
    name: String,
    nested: Nested,
}
#[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
struct Nested {
    limit: u64,
}
impl Default for Demo {
    fn default() -> Self {
        Self {
            name: "default".into(),
            nested: Nested { limit: 3 },
        }
    }
}

fn test_sections() -> ServerSections<'static> {
    use crate::transport::settings::{AuthSettings, ConnectionSettings, TlsSettings};
    static TLS: std::sync::LazyLock<TlsSettings> = std::sync::LazyLock::new(Default::default);
    static AUTH: std::sync::LazyLock<AuthSettings> = std::sync::LazyLock::new(Default::default);
    static CONN: std::sync::LazyLock<ConnectionSettings> =
        std::sync::LazyLock::new(Default::default);
    ServerSections {
        tls: &TLS,
        auth: &AUTH,
        connections: &CONN,
    }
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "name = \"file\"\n[nested]\nlimit = 7\n").unwrap();
    let from_file: Demo = load_layered(Some(&path), "SVCKIT_TEST_A").unwrap();
    assert_eq!(
        from_file,
        Demo {
            name: "file".into(),
            nested: Nested { limit: 7 }
        }
    );
    let env = config::Map::from([("SVCKIT_TEST_B__NESTED__LIMIT".to_string(), "11".to_string())]);
    let from_env: Demo = load_with_env(Some(&path), "SVCKIT_TEST_B", &[], Some(env)).unwrap();
    assert_eq!(from_env.nested.limit, 11);
    assert_eq!(from_env.name, "file");
}

#[test]
fn top_level_device_and_dtype_take_env_overrides_as_strings() {
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Placed {
        device: String,
        dtype: String,
    }
    impl Default for Placed {
        fn default() -> Self {
            Self {
                device: "cpu".into(),
                dtype: "f32".into(),
            }
        }
    }
    let env = config::Map::from([
        ("SVCKIT_TEST_C__DEVICE".to_string(), "cuda:1".to_string()),
        ("SVCKIT_TEST_C__DTYPE".to_string(), "bf16".to_string()),
    ]);
    let placed: Placed = load_with_env(None, "SVCKIT_TEST_C", &[], Some(env)).unwrap();
    assert_eq!(
        (placed.device.as_str(), placed.dtype.as_str()),
        ("cuda:1", "bf16")
    );
    let defaults: Placed =
        load_with_env(None, "SVCKIT_TEST_D", &[], Some(config::Map::new())).unwrap();
    assert_eq!(defaults, Placed::default());
}

#[test]
fn device_and_dtype_are_checked_with_the_rest() {
    let telemetry = TelemetryConfig::default();
    let settings = |device, dtype| CommonSettings {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        model: "random:tiny-llama:0",
        device,
        dtype,
        prefill_chunk_tokens: 512,
        max_message_bytes: 1 << 20,
        max_prompt_tokens: 1,
        max_prompt_bytes: None,
        max_concurrent_jobs: 1,
        telemetry: &telemetry,
        transport: test_sections(),
    };
    let problems = |device, dtype| {
        let mut p = Problems::new();
        settings(device, dtype).check(&mut p);
        p.list().to_vec()
    };
    assert!(problems("cpu", "f32").is_empty());
    assert!(problems("cpu", "bf16").is_empty());
    let bad = problems("gpu", "fp8");
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(
        bad[0].starts_with("device: ") && bad[0].contains("cuda:N"),
        "{bad:?}"
    );
    assert!(
        bad[1].starts_with("dtype: ") && bad[1].contains("bf16"),
        "{bad:?}"
    );
    let cuda = problems("cuda:0", "bf16");
    if crate::device::CUDA_BUILT {
        assert!(cuda.is_empty(), "{cuda:?}");
    } else {
        assert_eq!(cuda.len(), 1, "{cuda:?}");
        assert!(cuda[0].contains("`cuda` feature"), "{cuda:?}");
    }
}

/// A configuration as the services declare theirs: every struct refuses unknown fields.
#[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
struct Strict {
    name: String,
    limits: StrictLimits,
    telemetry: TelemetryConfig,
}
#[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
struct StrictLimits {
    max_message_bytes: u64,
}

#[test]
fn unknown_keys_are_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let none = || Some(config::Map::new());
    for (what, toml, key) in [
        (
            "nested typo",
            "[limits]\nmax_mesage_bytes = 7\n",
            "max_mesage_bytes",
        ),
        ("top-level typo", "nmae = \"x\"\n", "nmae"),
        (
            "unknown section",
            "[limit]\nmax_message_bytes = 7\n",
            "limit",
        ),
        (
            "telemetry typo",
            "[telemetry]\nlog_filtr = \"debug\"\n",
            "log_filtr",
        ),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let err = load_with_env::<Strict>(Some(&path), "SVCKIT_TEST_E", &[], none())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("unknown field `{key}`")) && err.contains("in the file"),
            "{what}: {err}"
        );
    }
    for (var, key) in [
        (
            "SVCKIT_TEST_F__LIMITS__MAX_MESAGE_BYTES",
            "max_mesage_bytes",
        ),
        ("SVCKIT_TEST_F__NMAE", "nmae"),
        ("SVCKIT_TEST_F__TELEMETRY__LOG_FILTR", "log_filtr"),
    ] {
        let env = config::Map::from([(var.to_string(), "7".to_string())]);
        let err = load_with_env::<Strict>(None, "SVCKIT_TEST_F", &[], Some(env))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("unknown field `{key}`"))
                && err.contains(&format!("in the environment: {var}")),
            "{var}: {err}"
        );
    }
    // Variables that only share the start of the prefix are not configuration.
    let env = config::Map::from([
        ("SVCKIT_TEST_F_OTHER".to_string(), "1".to_string()),
        ("SVCKIT_TEST_FX__NAME".to_string(), "1".to_string()),
        (
            "SVCKIT_TEST_F__LIMITS__MAX_MESSAGE_BYTES".to_string(),
            "9".to_string(),
        ),
    ]);
    let ok: Strict = load_with_env(None, "SVCKIT_TEST_F", &[], Some(env)).unwrap();
    assert_eq!(ok.limits.max_message_bytes, 9);
}

#[test]
fn the_prompt_byte_limit_follows_the_token_limit_unless_set() {
    let telemetry = TelemetryConfig::default();
    let mut c = CommonSettings {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        model: "random:tiny-llama:0",
        device: "cpu",
        dtype: "f32",
        prefill_chunk_tokens: 512,
        max_message_bytes: 64 << 20,
        max_prompt_tokens: 8192,
        max_prompt_bytes: None,
        max_concurrent_jobs: 1,
        telemetry: &telemetry,
        transport: test_sections(),
    };
    assert_eq!(c.prompt_bytes(), 8192 * DEFAULT_PROMPT_BYTES_PER_TOKEN);
    assert_eq!(
        c.max_request_bytes(),
        8192 * 16 + 8192 * 8 + REQUEST_OVERHEAD_BYTES
    );
    c.max_prompt_bytes = Some(1000);
    assert_eq!(c.prompt_bytes(), 1000);
    c.max_message_bytes = 1 << 16;
    assert_eq!(c.max_request_bytes(), 1 << 16);
    c.max_prompt_bytes = Some(0);
    let mut p = Problems::new();
    c.check(&mut p);
    assert!(
        p.list()
            .iter()
            .any(|e| e.starts_with("limits.max_prompt_bytes")),
        "{p}"
    );
}

#[test]
fn list_keys_take_comma_separated_variables() {
    #[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Listed {
        allowed: Vec<String>,
        name: String,
    }
    let env = config::Map::from([
        (
            "SVCKIT_TEST_G__ALLOWED".to_string(),
            "http://a:1,http://b:2".to_string(),
        ),
        ("SVCKIT_TEST_G__NAME".to_string(), "x,y".to_string()),
    ]);
    let listed: Listed = load_with_env(None, "SVCKIT_TEST_G", &["allowed"], Some(env)).unwrap();
    assert_eq!(listed.allowed, ["http://a:1", "http://b:2"]);
    assert_eq!(listed.name, "x,y");
}

#[test]
fn problems_are_reported_together() {
    let mut p = Problems::new();
    p.check(true, "a", "fine");
    p.check(false, "b", "must be positive");
    p.push("c", "missing");
    let err = p.into_result().unwrap_err().to_string();
    assert!(
        err.contains("2 problem(s)")
            && err.contains("b: must be positive")
            && err.contains("c: missing"),
        "{err}"
    );
}

#[test]
fn otlp_keys_take_env_overrides() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct WithTelemetry {
        telemetry: crate::telemetry::TelemetryConfig,
    }
    let env = config::Map::from([
        (
            "SVCKIT_TEST_H__TELEMETRY__OTLP__ENDPOINT".to_string(),
            "http://127.0.0.1:4317".to_string(),
        ),
        (
            "SVCKIT_TEST_H__TELEMETRY__OTLP__SAMPLING_RATIO".to_string(),
            "0.25".to_string(),
        ),
        (
            "SVCKIT_TEST_H__TELEMETRY__OTLP__SERVICE_NAME".to_string(),
            "sharer-a".to_string(),
        ),
    ]);
    let loaded: WithTelemetry = load_with_env(None, "SVCKIT_TEST_H", &[], Some(env)).unwrap();
    let otlp = &loaded.telemetry.otlp;
    assert_eq!(otlp.endpoint(), Some("http://127.0.0.1:4317"));
    assert_eq!(otlp.sampling_ratio, 0.25);
    assert_eq!(otlp.service_name_or("sharer-svc"), "sharer-a");
    // Set to nothing, as a template leaves it: no export, no problem.
    let empty = config::Map::from([(
        "SVCKIT_TEST_I__TELEMETRY__OTLP__ENDPOINT".to_string(),
        String::new(),
    )]);
    let loaded: WithTelemetry = load_with_env(None, "SVCKIT_TEST_I", &[], Some(empty)).unwrap();
    assert_eq!(loaded.telemetry.otlp.endpoint(), None);
    let mut problems = Problems::new();
    loaded.telemetry.validate(&mut problems);
    assert!(problems.list().is_empty(), "{problems}");
    // A typo in the section is refused with the key named.
    let typo = config::Map::from([(
        "SVCKIT_TEST_J__TELEMETRY__OTLP__ENDPIONT".to_string(),
        "http://127.0.0.1:4317".to_string(),
    )]);
    let err = load_with_env::<WithTelemetry>(None, "SVCKIT_TEST_J", &[], Some(typo))
        .unwrap_err()
        .to_string();
    assert!(err.contains("endpiont"), "{err}");
}
