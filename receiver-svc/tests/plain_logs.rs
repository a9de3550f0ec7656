//! Logs written to a pipe or a file (a container's log driver, `> receiver.log`) carry no ANSI
//! colour codes: the binary's log lines up to "serving" are read from a pipe and checked.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn log_lines_to_a_pipe_are_plain_text() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_receiver-svc"))
        .env("KVWIRE_RECEIVER__LISTEN_ADDR", "127.0.0.1:0")
        .env("KVWIRE_RECEIVER__MODEL", "random:tiny-llama:1")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start receiver-svc");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let serving = loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let done = line.contains("receiver transport:");
                lines.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        serving,
        "the receiver did not log its transport line:\n{lines:#?}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
    }
    assert!(lines.iter().any(|l| l.contains(" INFO ")), "{lines:#?}");
}
