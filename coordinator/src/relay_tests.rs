use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::*;
use crate::link_probe::{bulk_rate, round_trips, serve_probes};

fn probe_server() -> (SocketAddr, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let keep = listener.try_clone().unwrap();
    serve_probes(listener).unwrap();
    (addr, keep)
}

fn relay_to(server: SocketAddr, delays: Delays) -> Relay {
    Relay::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        Box::new(move || TcpStream::connect(server)),
        delays,
        None,
    )
    .unwrap()
}

#[test]
fn bytes_cross_unchanged_both_ways() {
    let (server, _keep) = probe_server();
    let relay = relay_to(server, Delays::default());
    let mut s = TcpStream::connect(relay.addr()).unwrap();
    s.write_all(b"e").unwrap();
    let msg: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let msg = msg.clone();
        std::thread::spawn(move || w.write_all(&msg).unwrap())
    };
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back, msg);
    let (_, count) = bulk_rate(TcpStream::connect(relay.addr()).unwrap(), 5_000_000).unwrap();
    assert_eq!(count, 5_000_000);
    // The counters move just after each write: wait for the last one.
    let want_down = 300_000 + 8;
    let start = Instant::now();
    while relay.stats().bytes_down < want_down && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = relay.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.bytes_up, 1 + 300_000 + 1 + 5_000_000);
    assert_eq!(stats.bytes_down, want_down);
}

/// The shortest of a series of round trips: the delay a path adds, without the thread wake-ups
/// that the test's own seven threads on a 2-core machine add to most of them (the median
/// carried 1.0-1.4 ms of that in about one run in five).
fn shortest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

#[test]
fn each_direction_is_delayed_by_its_own_delay_within_a_millisecond() {
    let (server, _keep) = probe_server();
    let direct = shortest(&round_trips(&mut TcpStream::connect(server).unwrap(), 10, 64).unwrap());
    for (up, down) in [(10u64, 10u64), (3, 12)] {
        let relay = relay_to(
            server,
            Delays {
                up: Duration::from_millis(up),
                down: Duration::from_millis(down),
            },
        );
        let mut s = TcpStream::connect(relay.addr()).unwrap();
        let rtt = shortest(&round_trips(&mut s, 15, 64).unwrap());
        let added = rtt - direct;
        let want = (up + down) as f64;
        assert!(
            (added - want).abs() < 1.0,
            "delays {up}+{down} ms: round trip {rtt:.3} ms, direct {direct:.3} ms, added \
             {added:.3} ms"
        );
    }
}

#[test]
fn chunks_overlap_in_flight_rather_than_queue_behind_the_delay() {
    // 40 small writes 2 ms apart through a 50 ms delay: a delay line delivers the last one
    // about 50 + 78 ms after the first write; a store-and-forward relay would take 40 x 50 ms.
    let (server, _keep) = probe_server();
    let relay = relay_to(server, Delays::both(Duration::from_millis(50)));
    let mut s = TcpStream::connect(relay.addr()).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"e").unwrap();
    let start = Instant::now();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..40 {
            w.write_all(&[1u8; 100]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut back = vec![0u8; 4000];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(400),
        "{took:?} for 40 writes through a 50 ms delay each way"
    );
    assert!(
        took >= Duration::from_millis(100),
        "{took:?}: the delay was not applied"
    );
}

#[test]
fn a_paused_relay_holds_the_stream_until_resumed() {
    let (server, _keep) = probe_server();
    let relay = relay_to(server, Delays::default());
    let mut s = TcpStream::connect(relay.addr()).unwrap();
    s.write_all(b"e").unwrap();
    s.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    relay.pause();
    s.write_all(b"held").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let err = s.read(&mut back).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    relay.resume();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"held");
}

#[test]
fn a_refused_upstream_closes_the_client() {
    // A port with nothing behind it.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = relay_to(dead, Delays::default());
    let mut s = TcpStream::connect(relay.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    drop(s);
    assert_eq!(relay.stats().upstream_failures, 1);
}
