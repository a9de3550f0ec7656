//! Start-up refuses a misspelt configuration key, in the TOML file or in a `KVWIRE_SHARER__*`
//! variable, and names it (`max_mesage_bytes` used to leave the default in force).

#[path = "../../service-kit/test-support/config_refusal.rs"]
mod config_refusal;

use config_refusal::Service;

const SERVICE: Service = Service {
    name: "sharer-svc",
    binary: env!("CARGO_BIN_EXE_sharer-svc"),
    env_prefix: "KVWIRE_SHARER",
};

#[test]
fn a_typo_in_the_file_is_refused_with_the_key_named() {
    SERVICE.refuses_a_file_typo();
}

#[test]
fn a_typo_in_an_environment_variable_is_refused_with_the_variable_named() {
    SERVICE.refuses_env_typos(&[
        "KVWIRE_SHARER__LIMITS__MAX_MESAGE_BYTES",
        "KVWIRE_SHARER__SESIONS__CAPACITY",
    ]);
}

#[test]
fn the_prompt_byte_limit_is_read_from_the_environment_and_checked() {
    SERVICE.refuses_env(
        &[("KVWIRE_SHARER__LIMITS__MAX_PROMPT_BYTES", "0")],
        &["limits.max_prompt_bytes"],
    );
}

#[test]
fn transport_settings_are_read_from_the_environment_and_every_problem_is_named() {
    SERVICE.refuses_env(
        &[
            ("KVWIRE_SHARER__TLS__MODE", "mutual"),
            ("KVWIRE_SHARER__TLS__CERT", "/nonexistent/sharer.pem"),
            ("KVWIRE_SHARER__AUTH__MODE", "token"),
            ("KVWIRE_SHARER__CONNECTIONS__MAX_CONNECTIONS", "0"),
        ],
        &[
            "tls.cert: reading /nonexistent/sharer.pem",
            "tls.client_ca: not set",
            "auth: mode = \"token\" needs tokens_file or tokens_env",
            "connections.max_connections",
        ],
    );
    SERVICE.refuses_env_typos(&["KVWIRE_SHARER__TLS__MDOE"]);
}
