//! Link profiles set up and torn down from Rust, for the tests that need real namespaces
//! (`coordinator/tests/link_profile.rs`, `tests/tests/link_partition.rs`): whether this machine
//! can make namespaces at all, a profile brought up through this checkout's
//! `scripts/link-profile.sh` (and down again when its guard is dropped), and a profile's veth
//! taken down and up again (a partitioned link). All of it needs root and iproute2.

use std::io;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::link::{LinkProfile, open_namespace};

/// This checkout's `scripts/link-profile.sh`.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/link-profile.sh")
}

/// Why link profiles cannot be set up here (not root, no iproute2, namespaces refused), or
/// `None` when they can.
pub fn unusable_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != "0") {
        return Some("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    if Command::new("tc").arg("-V").output().is_err() {
        return Some("no `tc` command (iproute2)".into());
    }
    // Creating a namespace is the real test of the permission (a container's root may lack it).
    let probe = "kvlink-probe";
    match Command::new("ip").args(["netns", "add", probe]).output() {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", probe]).status();
            None
        }
        Ok(o) => Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("no `ip` command (iproute2): {e}")),
    }
}

/// Whether both of `profile`'s namespaces exist (someone brought it up).
pub fn is_up(profile: &LinkProfile) -> bool {
    open_namespace(profile, &profile.sharer_namespace()).is_ok()
        && open_namespace(profile, &profile.receiver_namespace()).is_ok()
}

/// A profile this process brought up: brought down when dropped.
#[derive(Debug)]
pub struct BroughtUp(LinkProfile);

impl Drop for BroughtUp {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", self.0.name])
            .status();
    }
}

/// (Re)creates `profile`'s namespaces with `scripts/link-profile.sh up`.
pub fn bring_up(profile: &LinkProfile) -> io::Result<BroughtUp> {
    let out = Command::new("bash")
        .arg(script())
        .args(["up", profile.name])
        .output()?;
    checked(out, &format!("link-profile.sh up {}", profile.name))?;
    Ok(BroughtUp(*profile))
}

/// Brings `profile` up unless it is up already (then it is used as it is and left up).
pub fn ensure_up(profile: &LinkProfile) -> io::Result<Option<BroughtUp>> {
    if is_up(profile) {
        return Ok(None);
    }
    bring_up(profile).map(Some)
}

/// Sets the receiver side's veth end (`kvlink<N>b0`) down or up: down, the link is
/// partitioned (its peer loses carrier, nothing crosses either way, the connections over it
/// stay open and retransmit); up, it carries again.
pub fn set_veth(profile: &LinkProfile, up: bool) -> io::Result<()> {
    let ns = profile.receiver_namespace();
    let dev = format!("{ns}0");
    let state = if up { "up" } else { "down" };
    let out = Command::new("ip")
        .args(["-n", &ns, "link", "set", "dev", &dev, state])
        .output()?;
    checked(out, &format!("ip -n {ns} link set dev {dev} {state}"))
}

fn checked(out: Output, what: &str) -> io::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
