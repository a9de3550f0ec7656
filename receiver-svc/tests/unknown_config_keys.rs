//! Start-up refuses a misspelt configuration key, in the TOML file or in a `KVWIRE_RECEIVER__*`
//! variable, and names it (issue 18: `max_mesage_bytes` used to leave the default in force).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary until it exits (at most 60 s: a configuration it accepted would serve on an
/// ephemeral loopback port until killed). Returns (success, stderr).
fn start(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_receiver-svc"))
        .args(args)
        .env("KVWIRE_RECEIVER__LISTEN_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("receiver-svc {args:?} {env:?} started instead of refusing its configuration");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_typo_in_the_file_is_refused_with_the_key_named() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("receiver-typo.toml");
    std::fs::write(&path, "[limits]\nmax_mesage_bytes = 1048576\n").unwrap();
    let (ok, stderr) = start(&["--config", path.to_str().unwrap()], &[]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("unknown field `max_mesage_bytes`") && stderr.contains("in the file"),
        "{stderr}"
    );
}

#[test]
fn a_typo_in_an_environment_variable_is_refused_with_the_variable_named() {
    for var in [
        "KVWIRE_RECEIVER__LIMITS__MAX_MESAGE_BYTES",
        "KVWIRE_RECEIVER__C2C__FUSSER_DIR",
    ] {
        let (ok, stderr) = start(&[], &[(var, "1048576")]);
        assert!(!ok, "{stderr}");
        assert!(
            stderr.contains("unknown field") && stderr.contains(var),
            "{var}: {stderr}"
        );
    }
}
