//! The bounded refinement session store: at most `capacity` sessions and `max_bytes` of cached
//! K/V, each living `ttl` after its last use; least recently used evicted first. Pure
//! bookkeeping over an explicit clock, so limits and evictions are unit-tested without sleeping.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a session left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionReason {
    /// The store was over its session or byte limit.
    Capacity,
    /// The session was idle longer than the TTL.
    Ttl,
}

impl EvictionReason {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            EvictionReason::Capacity => "capacity",
            EvictionReason::Ttl => "ttl",
        }
    }
}

#[derive(Debug)]
struct Entry<V> {
    value: Arc<V>,
    bytes: u64,
    last_used: Instant,
}

/// Sessions keyed by a 16-byte id.
#[derive(Debug)]
pub struct SessionStore<V> {
    entries: HashMap<[u8; 16], Entry<V>>,
    capacity: usize,
    max_bytes: u64,
    ttl: Duration,
    bytes: u64,
}

impl<V> SessionStore<V> {
    /// An empty store with these limits.
    pub fn new(capacity: usize, max_bytes: u64, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            max_bytes,
            ttl,
            bytes: 0,
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Inserts a session of `bytes`, evicting expired then least recently used sessions until
    /// it fits. Returns the evictions, or `None` (and stores nothing) when the session alone is
    /// larger than the byte limit.
    pub fn insert(
        &mut self,
        id: [u8; 16],
        value: Arc<V>,
        bytes: u64,
        now: Instant,
    ) -> Option<Vec<EvictionReason>> {
        if bytes > self.max_bytes {
            return None;
        }
        let mut evicted = self.expire(now);
        if let Some(old) = self.entries.remove(&id) {
            self.bytes -= old.bytes;
        }
        while self.entries.len() >= self.capacity || self.bytes + bytes > self.max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.remove(&oldest);
            evicted.push(EvictionReason::Capacity);
        }
        self.bytes += bytes;
        self.entries.insert(
            id,
            Entry {
                value,
                bytes,
                last_used: now,
            },
        );
        Some(evicted)
    }

    /// The session, refreshing its TTL, plus any evictions of expired sessions.
    pub fn get(&mut self, id: &[u8; 16], now: Instant) -> (Option<Arc<V>>, Vec<EvictionReason>) {
        let evicted = self.expire(now);
        let value = self.entries.get_mut(id).map(|e| {
            e.last_used = now;
            e.value.clone()
        });
        (value, evicted)
    }

    /// Drops every session idle for longer than the TTL.
    pub fn expire(&mut self, now: Instant) -> Vec<EvictionReason> {
        let expired: Vec<[u8; 16]> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_used) > self.ttl)
            .map(|(k, _)| *k)
            .collect();
        for id in &expired {
            self.remove(id);
        }
        vec![EvictionReason::Ttl; expired.len()]
    }

    fn remove(&mut self, id: &[u8; 16]) {
        if let Some(e) = self.entries.remove(id) {
            self.bytes -= e.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; 16] {
        [n; 16]
    }

    #[test]
    fn evicts_least_recently_used_beyond_capacity() {
        let t0 = Instant::now();
        let mut s = SessionStore::new(2, 1000, Duration::from_secs(60));
        assert_eq!(s.insert(id(1), Arc::new(1), 10, t0), Some(vec![]));
        assert_eq!(
            s.insert(id(2), Arc::new(2), 10, t0 + Duration::from_secs(1)),
            Some(vec![])
        );
        // Touch 1 so that 2 is the least recently used.
        assert!(s.get(&id(1), t0 + Duration::from_secs(2)).0.is_some());
        let ev = s
            .insert(id(3), Arc::new(3), 10, t0 + Duration::from_secs(3))
            .unwrap();
        assert_eq!(ev, vec![EvictionReason::Capacity]);
        assert!(s.get(&id(2), t0 + Duration::from_secs(3)).0.is_none());
        assert_eq!((s.len(), s.bytes()), (2, 20));
    }

    #[test]
    fn byte_limit_and_ttl_evict_and_count() {
        let t0 = Instant::now();
        let mut s = SessionStore::new(10, 100, Duration::from_secs(5));
        s.insert(id(1), Arc::new(()), 60, t0).unwrap();
        let ev = s.insert(id(2), Arc::new(()), 60, t0).unwrap();
        assert_eq!(ev, vec![EvictionReason::Capacity]);
        assert_eq!(
            s.insert(id(3), Arc::new(()), 101, t0),
            None,
            "larger than the store"
        );
        let (got, ev) = s.get(&id(2), t0 + Duration::from_secs(6));
        assert!(got.is_none());
        assert_eq!(ev, vec![EvictionReason::Ttl]);
        assert!(s.is_empty() && s.bytes() == 0);
    }
}
