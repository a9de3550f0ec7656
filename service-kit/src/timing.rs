//! Wall-clock helpers for stage timings reported in milliseconds.

use std::time::{Duration, Instant};

/// Milliseconds of a duration as `f64` (stage timings are reported in ms).
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `f`, returning its value and the elapsed milliseconds.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let value = f();
    (value, ms(start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_measures_a_sleep() {
        let ((), elapsed) = timed(|| std::thread::sleep(Duration::from_millis(5)));
        assert!(elapsed >= 5.0, "{elapsed}");
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
