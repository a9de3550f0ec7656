//! Link profiles: the emulated networks a grid's `links` axis names (docs/REGIME_MAP.md).
//!
//! A profile other than `loopback` is a pair of network namespaces joined by a veth pair,
//! set up by `scripts/link-profile.sh up PROFILE` (root only): the **sharer side** `kvlinkNa`
//! (10.203.N.1) and the **receiver side** `kvlinkNb` (10.203.N.2), each veth end shaped by
//! `tc ... tbf` to the profile's rate. This kernel has no netem, so the delay comes from the
//! project's relay ([`crate::relay`]). A [`LinkPath`] routes one sharer through a profile:
//!
//! ```text
//! receiver --loopback--> near relay (listens on 127.0.0.1, root namespace;
//!                        holds each chunk RTT/2 per direction; connects from kvlinkNb)
//!          --veth, tbf--> far relay (listens on 10.203.N.1 in kvlinkNa, no delay)
//!          --loopback--> sharer (127.0.0.1, root namespace)
//! ```
//!
//! Every byte between receiver and sharer crosses the shaped veth once each way and is
//! delayed once each way; the two relay hops on loopback are the relays' own overhead,
//! measured by `coordinator link-probe`. Namespaces are per thread on Linux: the relays' accept
//! threads move into the namespace their sockets must live in (`setns`), the rest of the
//! process stays where it is.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use crate::relay::{Delays, Relay};

/// The profile with no emulation: the services talk on 127.0.0.1 directly.
pub const LOOPBACK: &str = "loopback";

/// An emulated link: rate and round-trip time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProfile {
    /// Name as grids and rows write it.
    pub name: &'static str,
    /// Number of its namespaces and subnet (`kvlink<N>a`, 10.203.N.0/30); 0 for loopback.
    pub index: u8,
    /// Rate of each direction, bits per second (`None`: not shaped).
    pub rate_bps: Option<u64>,
    /// Round-trip time added by the relay, microseconds (half of it each way).
    pub rtt_us: u64,
}

/// Every profile, as `scripts/link-profile.sh` knows them (same names, indices and rates).
pub const PROFILES: [LinkProfile; 4] = [
    LinkProfile {
        name: LOOPBACK,
        index: 0,
        rate_bps: None,
        rtt_us: 0,
    },
    LinkProfile {
        name: "10gbit-0.1ms",
        index: 1,
        rate_bps: Some(10_000_000_000),
        rtt_us: 100,
    },
    LinkProfile {
        name: "1gbit-1ms",
        index: 2,
        rate_bps: Some(1_000_000_000),
        rtt_us: 1_000,
    },
    LinkProfile {
        name: "100mbit-20ms",
        index: 3,
        rate_bps: Some(100_000_000),
        rtt_us: 20_000,
    },
];

/// Why a link cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The name is not a profile.
    #[error("unknown link profile {name:?}; the profiles are {known}")]
    Unknown {
        /// The name given.
        name: String,
        /// The names known.
        known: String,
    },
    /// The profile's namespaces are not there (or cannot be entered).
    #[error(
        "link profile {profile}: namespace {namespace} cannot be entered ({source}); set it up \
         as root with `scripts/link-profile.sh up {profile}`"
    )]
    Namespace {
        /// The profile.
        profile: String,
        /// The namespace.
        namespace: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A relay of the path could not start.
    #[error("link profile {profile}: {what}: {source}")]
    Relay {
        /// The profile.
        profile: String,
        /// Which step failed.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
}

impl LinkProfile {
    /// The profile named `name`.
    pub fn by_name(name: &str) -> Result<LinkProfile, LinkError> {
        PROFILES
            .iter()
            .find(|p| p.name == name)
            .copied()
            .ok_or_else(|| LinkError::Unknown {
                name: name.to_string(),
                known: PROFILES.map(|p| p.name).join(", "),
            })
    }

    /// Whether the profile is plain loopback (no namespaces, no relay).
    pub fn is_loopback(&self) -> bool {
        self.index == 0
    }

    /// The one-way delay the relay adds in each direction.
    pub fn one_way_delay(&self) -> Duration {
        Duration::from_micros(self.rtt_us / 2)
    }

    /// The sharer-side namespace (`kvlink<N>a`).
    pub fn sharer_namespace(&self) -> String {
        format!("kvlink{}a", self.index)
    }

    /// The receiver-side namespace (`kvlink<N>b`).
    pub fn receiver_namespace(&self) -> String {
        format!("kvlink{}b", self.index)
    }

    /// The sharer side's address on the veth (10.203.N.1).
    pub fn sharer_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 203, self.index, 1)
    }
}

/// Opens a named network namespace (`/run/netns/<name>`, where `ip netns add` puts it).
pub fn open_namespace(profile: &LinkProfile, name: &str) -> Result<File, LinkError> {
    File::open(format!("/run/netns/{name}")).map_err(|source| LinkError::Namespace {
        profile: profile.name.to_string(),
        namespace: name.to_string(),
        source,
    })
}

/// Moves the calling thread into the network namespace `ns`.
pub fn enter_namespace(ns: &File) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(ns),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(io::Error::from)
}

/// Runs `f` on a new thread inside the network namespace `ns` (sockets it creates live there).
pub fn in_namespace<T: Send + 'static>(
    ns: File,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            enter_namespace(&ns)?;
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("a thread in another network namespace panicked"))?
}

/// A sharer reached through a link profile: the two relays of the path.
#[derive(Debug)]
pub struct LinkPath {
    /// The profile.
    pub profile: LinkProfile,
    near: Relay,
    _far: Relay,
}

impl LinkPath {
    /// Routes `sharer` (an address on this namespace's loopback) through `profile`'s veth,
    /// with the profile's delay. Fails with [`LinkError::Namespace`] when the profile is not
    /// set up.
    pub fn open(profile: LinkProfile, sharer: SocketAddr) -> Result<LinkPath, LinkError> {
        let relay_err = |what: &'static str| {
            let name = profile.name.to_string();
            move |source: io::Error| LinkError::Relay {
                profile: name,
                what,
                source,
            }
        };
        let sharer_ns = open_namespace(&profile, &profile.sharer_namespace())?;
        let receiver_ns = open_namespace(&profile, &profile.receiver_namespace())?;
        // The far relay listens on the sharer side of the veth and connects to the sharer on
        // this (the root) namespace's loopback: its listener is made inside the namespace,
        // its connections from the accept thread, which stays here.
        let ip = profile.sharer_ip();
        let far_listener = in_namespace(sharer_ns, move || {
            TcpListener::bind(SocketAddrV4::new(ip, 0))
        })
        .map_err(relay_err("binding the sharer side of the veth"))?;
        let far = Relay::start(
            far_listener,
            Box::new(move || TcpStream::connect(sharer)),
            Delays::default(),
            None,
        )
        .map_err(relay_err("starting the sharer-side relay"))?;
        let far_addr = far.addr();
        // The near relay listens here and connects from the receiver side of the veth: its
        // accept thread moves into that namespace before the first connection.
        let near = Relay::start(
            TcpListener::bind("127.0.0.1:0").map_err(relay_err("binding loopback"))?,
            Box::new(move || TcpStream::connect(far_addr)),
            Delays::both(profile.one_way_delay()),
            Some(Box::new(move || enter_namespace(&receiver_ns))),
        )
        .map_err(relay_err("starting the receiver-side relay"))?;
        Ok(LinkPath {
            profile,
            near,
            _far: far,
        })
    }

    /// Where the receiver connects instead of the sharer.
    pub fn addr(&self) -> SocketAddr {
        self.near.addr()
    }

    /// The delaying relay (to pause it, or read its counters).
    pub fn relay(&self) -> &Relay {
        &self.near
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_have_their_names_rates_and_delays() {
        let p = LinkProfile::by_name("100mbit-20ms").unwrap();
        assert_eq!(p.rate_bps, Some(100_000_000));
        assert_eq!(p.one_way_delay(), Duration::from_millis(10));
        assert_eq!(p.sharer_namespace(), "kvlink3a");
        assert_eq!(p.sharer_ip(), Ipv4Addr::new(10, 203, 3, 1));
        assert_eq!(
            LinkProfile::by_name("10gbit-0.1ms")
                .unwrap()
                .one_way_delay(),
            Duration::from_micros(50)
        );
        assert!(LinkProfile::by_name(LOOPBACK).unwrap().is_loopback());
        let err = LinkProfile::by_name("56k").unwrap_err().to_string();
        assert!(
            err.contains("loopback, 10gbit-0.1ms, 1gbit-1ms, 100mbit-20ms"),
            "{err}"
        );
    }

    #[test]
    fn the_script_knows_the_same_profiles() {
        let script = include_str!("../../scripts/link-profile.sh");
        for p in PROFILES.iter().filter(|p| !p.is_loopback()) {
            let line = format!("{}) index={} rate=", p.name, p.index);
            assert!(
                script.contains(&line),
                "scripts/link-profile.sh lacks {line:?}"
            );
        }
    }
}
