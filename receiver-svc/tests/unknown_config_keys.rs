//! Start-up refuses a misspelt configuration key, in the TOML file or in a `KVWIRE_RECEIVER__*`
//! variable, and names it (`max_mesage_bytes` used to leave the default in force).

#[path = "../../service-kit/test-support/config_refusal.rs"]
mod config_refusal;

use config_refusal::Service;

const SERVICE: Service = Service {
    name: "receiver-svc",
    binary: env!("CARGO_BIN_EXE_receiver-svc"),
    env_prefix: "KVWIRE_RECEIVER",
};

#[test]
fn a_typo_in_the_file_is_refused_with_the_key_named() {
    SERVICE.refuses_a_file_typo();
}

#[test]
fn a_typo_in_an_environment_variable_is_refused_with_the_variable_named() {
    SERVICE.refuses_env_typos(&[
        "KVWIRE_RECEIVER__LIMITS__MAX_MESAGE_BYTES",
        "KVWIRE_RECEIVER__C2C__FUSSER_DIR",
    ]);
}

#[test]
fn the_sharer_allow_list_is_read_from_the_environment_and_checked() {
    // A comma-separated list; its https:// entry is refused (no TLS yet), so the list was read.
    SERVICE.refuses_env(
        &[(
            "KVWIRE_RECEIVER__ALLOWED_SHARERS",
            "http://127.0.0.1:50051,https://sharer:443",
        )],
        &["allowed_sharers: entry 1", "TLS"],
    );
}
