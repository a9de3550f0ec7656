//! The bounded refinement session store: at most `capacity` sessions and `max_bytes` of cached
//! K/V, each living `ttl` after its last use; least recently used evicted first. Each session
//! belongs to the client that made it ([`ClientId`]): one client holds at most
//! `max_per_client` sessions and `max_bytes_per_client` bytes (beyond them its own least
//! recently used go first, so one client cannot push out everyone else's), and only its owner
//! can refine it. Pure bookkeeping over an explicit clock, so limits and evictions are
//! unit-tested without sleeping.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_kit::transport::identity::ClientId;

/// Why a session left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionReason {
    /// The store was over its session or byte limit.
    Capacity,
    /// The session was idle longer than the TTL.
    Ttl,
    /// Its client was over its own session or byte limit.
    ClientLimit,
}

impl EvictionReason {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            EvictionReason::Capacity => "capacity",
            EvictionReason::Ttl => "ttl",
            EvictionReason::ClientLimit => "client_limit",
        }
    }
}

#[derive(Debug)]
struct Entry<V> {
    owner: ClientId,
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
    client_sessions: usize,
    client_bytes: u64,
    ttl: Duration,
    bytes: u64,
}

impl<V> SessionStore<V> {
    /// An empty store with these limits (per client: the same, until
    /// [`SessionStore::with_client_limits`]).
    pub fn new(capacity: usize, max_bytes: u64, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            max_bytes,
            client_sessions: capacity,
            client_bytes: max_bytes,
            ttl,
            bytes: 0,
        }
    }

    /// At most `sessions` sessions and `bytes` bytes per client.
    pub fn with_client_limits(mut self, sessions: usize, bytes: u64) -> Self {
        self.client_sessions = sessions;
        self.client_bytes = bytes;
        self
    }

    /// Sessions and bytes `owner` holds.
    fn held_by(&self, owner: &ClientId) -> (usize, u64) {
        self.entries
            .values()
            .filter(|e| &e.owner == owner)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.bytes))
    }

    /// The least recently used session of `owner` (of anyone when `None`).
    fn oldest(&self, owner: Option<&ClientId>) -> Option<[u8; 16]> {
        self.entries
            .iter()
            .filter(|(_, e)| owner.is_none_or(|o| &e.owner == o))
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, _)| *k)
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

    /// Inserts `owner`'s session of `bytes`, evicting expired sessions, then `owner`'s least
    /// recently used ones while it is over its own limits, then anyone's least recently used
    /// until it fits. Returns the evictions, or `None` (and stores nothing) when the session
    /// alone is larger than the byte limit or the client's byte limit.
    pub fn insert(
        &mut self,
        id: [u8; 16],
        owner: &ClientId,
        value: Arc<V>,
        bytes: u64,
        now: Instant,
    ) -> Option<Vec<EvictionReason>> {
        if bytes > self.max_bytes || bytes > self.client_bytes {
            return None;
        }
        let mut evicted = self.expire(now);
        self.remove(&id);
        loop {
            let (n, held) = self.held_by(owner);
            if n < self.client_sessions && held + bytes <= self.client_bytes {
                break;
            }
            let Some(oldest) = self.oldest(Some(owner)) else {
                break;
            };
            // Labelled by the limit that needs it: the store's, when it is full too.
            let full = self.entries.len() >= self.capacity || self.bytes + bytes > self.max_bytes;
            self.remove(&oldest);
            evicted.push(if full {
                EvictionReason::Capacity
            } else {
                EvictionReason::ClientLimit
            });
        }
        while self.entries.len() >= self.capacity || self.bytes + bytes > self.max_bytes {
            let Some(oldest) = self.oldest(None) else {
                break;
            };
            self.remove(&oldest);
            evicted.push(EvictionReason::Capacity);
        }
        self.bytes += bytes;
        self.entries.insert(
            id,
            Entry {
                owner: owner.clone(),
                value,
                bytes,
                last_used: now,
            },
        );
        Some(evicted)
    }

    /// `owner`'s session, refreshing its TTL, plus any evictions of expired sessions; another
    /// client's session is not found.
    pub fn get(
        &mut self,
        id: &[u8; 16],
        owner: &ClientId,
        now: Instant,
    ) -> (Option<Arc<V>>, Vec<EvictionReason>) {
        let evicted = self.expire(now);
        let value = self
            .entries
            .get_mut(id)
            .filter(|e| &e.owner == owner)
            .map(|e| {
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

    fn me() -> ClientId {
        ClientId::named("me")
    }

    #[test]
    fn evicts_least_recently_used_beyond_capacity() {
        let t0 = Instant::now();
        let mut s = SessionStore::new(2, 1000, Duration::from_secs(60));
        assert_eq!(s.insert(id(1), &me(), Arc::new(1), 10, t0), Some(vec![]));
        assert_eq!(
            s.insert(id(2), &me(), Arc::new(2), 10, t0 + Duration::from_secs(1)),
            Some(vec![])
        );
        // Touch 1 so that 2 is the least recently used.
        assert!(
            s.get(&id(1), &me(), t0 + Duration::from_secs(2))
                .0
                .is_some()
        );
        let ev = s
            .insert(id(3), &me(), Arc::new(3), 10, t0 + Duration::from_secs(3))
            .unwrap();
        assert_eq!(ev, vec![EvictionReason::Capacity]);
        assert!(
            s.get(&id(2), &me(), t0 + Duration::from_secs(3))
                .0
                .is_none()
        );
        assert_eq!((s.len(), s.bytes()), (2, 20));
    }

    #[test]
    fn byte_limit_and_ttl_evict_and_count() {
        let t0 = Instant::now();
        let mut s = SessionStore::new(10, 100, Duration::from_secs(5));
        s.insert(id(1), &me(), Arc::new(()), 60, t0).unwrap();
        let ev = s.insert(id(2), &me(), Arc::new(()), 60, t0).unwrap();
        assert_eq!(ev, vec![EvictionReason::Capacity]);
        assert_eq!(
            s.insert(id(3), &me(), Arc::new(()), 101, t0),
            None,
            "larger than the store"
        );
        let (got, ev) = s.get(&id(2), &me(), t0 + Duration::from_secs(6));
        assert!(got.is_none());
        assert_eq!(ev, vec![EvictionReason::Ttl]);
        assert!(s.is_empty() && s.bytes() == 0);
    }

    #[test]
    fn one_client_over_its_limits_evicts_its_own_sessions_only() {
        let t0 = Instant::now();
        let (a, b) = (ClientId::named("a"), ClientId::named("b"));
        let mut s = SessionStore::new(10, 1000, Duration::from_secs(60)).with_client_limits(2, 100);
        s.insert(id(1), &b, Arc::new(()), 10, t0).unwrap();
        for n in 2..=4 {
            let at = t0 + Duration::from_secs(u64::from(n));
            s.insert(id(n), &a, Arc::new(()), 10, at).unwrap();
        }
        // a keeps its two newest; b's older session is untouched.
        let later = t0 + Duration::from_secs(10);
        assert!(s.get(&id(2), &a, later).0.is_none());
        assert!(s.get(&id(3), &a, later).0.is_some() && s.get(&id(4), &a, later).0.is_some());
        assert!(s.get(&id(1), &b, later).0.is_some());
        // Only the owner can use a session.
        assert!(s.get(&id(1), &a, later).0.is_none());
        // Bytes per client: a's 95-byte session pushes out both of its own, not b's.
        let ev = s.insert(id(5), &a, Arc::new(()), 95, later).unwrap();
        assert_eq!(ev, vec![EvictionReason::ClientLimit; 2]);
        assert!(s.get(&id(1), &b, later).0.is_some());
        assert_eq!(s.insert(id(6), &a, Arc::new(()), 101, later), None);
    }
}
