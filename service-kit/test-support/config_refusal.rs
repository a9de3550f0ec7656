//! Shared by the services' `unknown_config_keys` integration tests (included with `#[path]`):
//! start a service binary with a misspelt configuration key, in the TOML file or in an
//! environment variable, and check it refuses to start and names the key.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A service binary and its environment prefix.
pub struct Service {
    /// Its name (file names and messages).
    pub name: &'static str,
    /// Path of the built binary (`env!("CARGO_BIN_EXE_<name>")`).
    pub binary: &'static str,
    /// Environment prefix, e.g. `KVWIRE_SHARER`.
    pub env_prefix: &'static str,
}

impl Service {
    /// Runs the binary until it exits (at most 60 s: a configuration it accepted would serve
    /// on an ephemeral loopback port until killed). Returns (success, stderr).
    fn start(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let mut child = Command::new(self.binary)
            .args(args)
            .env(format!("{}__LISTEN_ADDR", self.env_prefix), "127.0.0.1:0")
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
                panic!(
                    "{} {args:?} {env:?} started instead of refusing its configuration",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        (
            status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `max_mesage_bytes` in the file's `[limits]` is refused, the key and the layer named.
    pub fn refuses_a_file_typo(&self) {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{}-typo.toml", self.name));
        std::fs::write(&path, "[limits]\nmax_mesage_bytes = 1048576\n").unwrap();
        let (ok, stderr) = self.start(&["--config", path.to_str().unwrap()], &[]);
        assert!(!ok, "{stderr}");
        assert!(
            stderr.contains("unknown field `max_mesage_bytes`") && stderr.contains("in the file"),
            "{stderr}"
        );
    }

    /// Start-up with `env` is refused, the error naming each of `expect`.
    pub fn refuses_env(&self, env: &[(&str, &str)], expect: &[&str]) {
        let (ok, stderr) = self.start(&[], env);
        assert!(!ok, "{env:?}: {stderr}");
        for e in expect {
            assert!(stderr.contains(e), "{env:?}: {e:?} missing from {stderr}");
        }
    }

    /// Each misspelt variable is refused, the variable named.
    pub fn refuses_env_typos(&self, vars: &[&str]) {
        for var in vars {
            let (ok, stderr) = self.start(&[], &[(var, "1048576")]);
            assert!(!ok, "{stderr}");
            assert!(
                stderr.contains("unknown field") && stderr.contains(var),
                "{var}: {stderr}"
            );
        }
    }
}
