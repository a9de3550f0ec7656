//! `coordinator relay` (a delaying TCP relay between two addresses, for services run by hand)
//! and `coordinator link-probe` (the relay's own overhead on loopback): docs/REGIME_MAP.md.

use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use coordinator::link_probe::loopback_overhead;
use coordinator::relay::{Delays, Relay};

/// `coordinator relay` arguments.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on, for example `127.0.0.1:50061`.
    #[arg(long)]
    listen: String,
    /// Address every accepted connection is forwarded to, for example `10.203.3.1:50051`.
    #[arg(long)]
    upstream: String,
    /// One-way delay of each direction, ms (half the round trip to emulate).
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// One-way delay client to upstream, ms (overrides --delay-ms for that direction).
    #[arg(long)]
    up_delay_ms: Option<f64>,
    /// One-way delay upstream to client, ms (overrides --delay-ms for that direction).
    #[arg(long)]
    down_delay_ms: Option<f64>,
}

fn ms(v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v >= 0.0,
        "a delay must be a non-negative number of ms, not {v}"
    );
    Ok(Duration::from_secs_f64(v / 1e3))
}

/// Runs a relay until standard input ends; lines `pause`, `resume` and `stats` on standard
/// input stop forwarding, start it again, and print the counters.
pub fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let delays = Delays {
        up: ms(args.up_delay_ms.unwrap_or(args.delay_ms))?,
        down: ms(args.down_delay_ms.unwrap_or(args.delay_ms))?,
    };
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let upstream = args.upstream.clone();
    let relay = Relay::start(
        listener,
        Box::new(move || TcpStream::connect(&upstream)),
        delays,
        None,
    )
    .context("starting the relay")?;
    println!(
        "relay {} -> {} (delay {:?} up, {:?} down); stdin: pause | resume | stats",
        relay.addr(),
        args.upstream,
        delays.up,
        delays.down
    );
    for line in std::io::stdin().lock().lines() {
        match line.context("reading standard input")?.trim() {
            "pause" => relay.pause(),
            "resume" => relay.resume(),
            "stats" => println!("{:?}", relay.stats()),
            "" => {}
            other => eprintln!("unknown command {other:?}: pause | resume | stats"),
        }
    }
    println!("{:?}", relay.stats());
    Ok(())
}

/// `coordinator link-probe` arguments.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Round trips of 64 bytes per path.
    #[arg(long, default_value_t = 500)]
    pings: usize,
    /// Bytes of each bulk transfer, MB.
    #[arg(long, default_value_t = 200)]
    bulk_mb: u64,
}

/// Prints the relay's overhead on loopback: direct against a zero-delay relay.
pub fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let o = loopback_overhead(args.pings, args.bulk_mb * 1_000_000)
        .context("probing loopback through the relay")?;
    println!(
        "round trip (median of {} x 64 B): direct {:.3} ms, through the relay {:.3} ms (+{:.3} \
         ms, {:.3} ms each way)",
        o.pings,
        o.rtt_direct_ms,
        o.rtt_relay_ms,
        o.rtt_relay_ms - o.rtt_direct_ms,
        (o.rtt_relay_ms - o.rtt_direct_ms) / 2.0
    );
    println!(
        "bulk ({} MB): direct {:.0} Mbit/s, through the relay {:.0} Mbit/s (ratio {:.2})",
        o.bulk_bytes / 1_000_000,
        o.rate_direct_bps / 1e6,
        o.rate_relay_bps / 1e6,
        o.rate_relay_bps / o.rate_direct_bps
    );
    Ok(())
}
