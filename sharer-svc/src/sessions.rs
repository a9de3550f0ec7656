//! The bounded refinement session store: at most `capacity` sessions and `max_bytes` of cached
//! K/V, each living `ttl` after its last use. Each session belongs to the client that made it
//! ([`ClientId`]): one client holds at most `max_per_client` sessions and
//! `max_bytes_per_client` bytes (beyond them its own least recently used go first), and only
//! its owner can refine or release it. A session's room is reserved before its Share sends
//! anything ([`SessionStore::reserve`]) and filled once its frames are out
//! ([`SessionStore::fill`]); when the store has no room left after expiry and the client's own
//! evictions, the reservation is refused ([`StoreFull`]) and no other client's session is
//! touched. Pure bookkeeping over an explicit clock, so limits and evictions are unit-tested
//! without sleeping (those tests are a third of this file's length).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_kit::transport::identity::ClientId;

/// Why a session left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionReason {
    /// The session was idle longer than the TTL.
    Ttl,
    /// Its client was over its own session or byte limit.
    ClientLimit,
    /// Its owner released it (Release).
    Released,
}

impl EvictionReason {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            EvictionReason::Ttl => "ttl",
            EvictionReason::ClientLimit => "client_limit",
            EvictionReason::Released => "released",
        }
    }
}

/// A reservation the store cannot make: nothing was stored and nothing evicted but expired
/// sessions and the client's own over its limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreFull {
    /// The session alone is larger than the store's or the client's byte limit.
    #[error("a session of {bytes} bytes is larger than the {limit}-byte {whose} limit")]
    TooLarge {
        /// The session's bytes.
        bytes: u64,
        /// The limit it exceeds.
        limit: u64,
        /// `store` or `per-client`.
        whose: &'static str,
    },
    /// Other clients' sessions (or this client's sessions still being sent) fill the store.
    #[error(
        "the session store is full ({sessions} of {capacity} sessions, {bytes} of {max_bytes} \
         bytes held; this session needs {needed} bytes)"
    )]
    Full {
        /// Sessions held or reserved.
        sessions: usize,
        /// The store's session limit.
        capacity: usize,
        /// Bytes held or reserved.
        bytes: u64,
        /// The store's byte limit.
        max_bytes: u64,
        /// Bytes of the refused session.
        needed: u64,
    },
}

#[derive(Debug)]
struct Entry<V> {
    owner: ClientId,
    /// `None` while reserved: its Share is still sending; neither usable nor evictable.
    value: Option<Arc<V>>,
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

    /// Sessions and bytes `owner` holds or has reserved.
    fn held_by(&self, owner: &ClientId) -> (usize, u64) {
        self.entries
            .values()
            .filter(|e| &e.owner == owner)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.bytes))
    }

    /// `owner`'s filled sessions, least recently used first.
    fn oldest_of(&self, owner: &ClientId) -> Vec<([u8; 16], u64)> {
        let mut own: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| &e.owner == owner && e.value.is_some())
            .map(|(k, e)| (e.last_used, *k, e.bytes))
            .collect();
        own.sort_unstable();
        own.into_iter().map(|(_, k, b)| (k, b)).collect()
    }

    /// Sessions held or reserved.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held or reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reserves room for `owner`'s session `id` of `bytes`: drops expired sessions, then
    /// `owner`'s least recently used while it is over its own limits; if the store would still
    /// have no room, refuses before evicting any of them and without touching anyone else's
    /// session. Returns the outcome and the evictions made either way. The reservation counts
    /// against every limit until [`SessionStore::fill`] or [`SessionStore::abandon`].
    pub fn reserve(
        &mut self,
        id: [u8; 16],
        owner: &ClientId,
        bytes: u64,
        now: Instant,
    ) -> (Result<(), StoreFull>, Vec<EvictionReason>) {
        let mut evicted = self.expire(now);
        let outcome = self.own_evictions(id, owner, bytes).map(|own| {
            for oldest in &own {
                self.remove(oldest);
                evicted.push(EvictionReason::ClientLimit);
            }
            self.bytes += bytes;
            let entry = Entry {
                owner: owner.clone(),
                value: None,
                bytes,
                last_used: now,
            };
            self.entries.insert(id, entry);
        });
        (outcome, evicted)
    }

    /// The sessions of `owner` to evict (its least recently used, while it is over its own
    /// limits) for a new session of `bytes`, or why the store has no room for it even then.
    fn own_evictions(
        &self,
        id: [u8; 16],
        owner: &ClientId,
        bytes: u64,
    ) -> Result<Vec<[u8; 16]>, StoreFull> {
        let too_large = |limit, whose| StoreFull::TooLarge {
            bytes,
            limit,
            whose,
        };
        if bytes > self.max_bytes {
            return Err(too_large(self.max_bytes, "store"));
        }
        if bytes > self.client_bytes {
            return Err(too_large(self.client_bytes, "per-client"));
        }
        // A 128-bit random id taken already: refuse rather than touch that session.
        if self.entries.contains_key(&id) {
            return Err(self.full(bytes));
        }
        let (mut n, mut held) = self.held_by(owner);
        let (mut store_n, mut store_bytes) = (self.entries.len(), self.bytes);
        let mut own = self.oldest_of(owner).into_iter();
        let mut evict = Vec::new();
        while n >= self.client_sessions || held + bytes > self.client_bytes {
            // Only its own sessions still being sent: no room for it.
            let Some((oldest, b)) = own.next() else {
                return Err(self.full(bytes));
            };
            evict.push(oldest);
            (n, held, store_n, store_bytes) = (n - 1, held - b, store_n - 1, store_bytes - b);
        }
        if store_n >= self.capacity || store_bytes + bytes > self.max_bytes {
            return Err(self.full(bytes));
        }
        Ok(evict)
    }

    fn full(&self, needed: u64) -> StoreFull {
        StoreFull::Full {
            sessions: self.entries.len(),
            capacity: self.capacity,
            bytes: self.bytes,
            max_bytes: self.max_bytes,
            needed,
        }
    }

    /// Fills reservation `id` with its session, its TTL starting at `now`; false (and nothing
    /// stored) when `id` is not a reservation.
    pub fn fill(&mut self, id: &[u8; 16], value: Arc<V>, now: Instant) -> bool {
        match self.entries.get_mut(id) {
            Some(e) if e.value.is_none() => {
                e.value = Some(value);
                e.last_used = now;
                true
            }
            _ => false,
        }
    }

    /// Drops reservation `id` (its Share failed or was cancelled); a filled session stays.
    pub fn abandon(&mut self, id: &[u8; 16]) {
        if self.entries.get(id).is_some_and(|e| e.value.is_none()) {
            self.remove(id);
        }
    }

    /// Releases `owner`'s filled session `id`; false when there is none (unknown, expired,
    /// another client's, or still being sent).
    pub fn release(&mut self, id: &[u8; 16], owner: &ClientId) -> bool {
        let owned = self
            .entries
            .get(id)
            .is_some_and(|e| &e.owner == owner && e.value.is_some());
        if owned {
            self.remove(id);
        }
        owned
    }

    /// `owner`'s session, refreshing its TTL, plus any evictions of expired sessions; another
    /// client's session (or a reservation) is not found.
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
            .and_then(|e| {
                let value = e.value.clone()?;
                e.last_used = now;
                Some(value)
            });
        (value, evicted)
    }

    /// Drops every filled session idle for longer than the TTL (a reservation is its Share's,
    /// bounded by that call's deadline).
    pub fn expire(&mut self, now: Instant) -> Vec<EvictionReason> {
        let expired: Vec<[u8; 16]> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.value.is_some() && now.saturating_duration_since(e.last_used) > self.ttl
            })
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

    /// Reserves and fills: the evictions, or the refusal.
    fn put<V>(
        s: &mut SessionStore<V>,
        n: u8,
        owner: &ClientId,
        value: V,
        bytes: u64,
        now: Instant,
    ) -> Result<Vec<EvictionReason>, StoreFull> {
        let (outcome, evicted) = s.reserve(id(n), owner, bytes, now);
        outcome?;
        assert!(s.fill(&id(n), Arc::new(value), now));
        Ok(evicted)
    }

    #[test]
    fn a_full_store_refuses_and_evicts_nobody_else() {
        let t0 = Instant::now();
        let (a, b) = (ClientId::named("a"), ClientId::named("b"));
        let mut s = SessionStore::new(2, 1000, Duration::from_secs(60));
        assert_eq!(put(&mut s, 1, &a, 1, 10, t0), Ok(vec![]));
        assert_eq!(put(&mut s, 2, &a, 2, 10, t0), Ok(vec![]));
        let later = t0 + Duration::from_secs(3);
        let refused = put(&mut s, 3, &b, 3, 10, later).unwrap_err();
        assert!(
            matches!(refused, StoreFull::Full { sessions: 2, .. }),
            "{refused}"
        );
        assert!(s.get(&id(1), &a, later).0.is_some() && s.get(&id(2), &a, later).0.is_some());
        assert_eq!((s.len(), s.bytes()), (2, 20));
        // The byte limit refuses the same way; a released session makes room.
        let mut s = SessionStore::new(10, 100, Duration::from_secs(60));
        put(&mut s, 1, &a, 1, 60, t0).unwrap();
        assert!(matches!(
            put(&mut s, 2, &b, 2, 60, t0),
            Err(StoreFull::Full { .. })
        ));
        assert!(!s.release(&id(1), &b), "only the owner releases");
        assert!(s.release(&id(1), &a));
        assert!(!s.release(&id(1), &a), "released once");
        assert_eq!(put(&mut s, 2, &b, 2, 60, t0), Ok(vec![]));
    }

    #[test]
    fn too_large_sessions_are_refused_and_ttl_evicts() {
        let t0 = Instant::now();
        let mut s = SessionStore::new(10, 100, Duration::from_secs(5)).with_client_limits(10, 50);
        let refused = put(&mut s, 3, &me(), (), 101, t0).unwrap_err();
        assert!(
            matches!(refused, StoreFull::TooLarge { whose: "store", .. }),
            "{refused}"
        );
        let refused = put(&mut s, 3, &me(), (), 51, t0).unwrap_err();
        assert!(matches!(
            refused,
            StoreFull::TooLarge {
                whose: "per-client",
                ..
            }
        ));
        put(&mut s, 2, &me(), (), 40, t0).unwrap();
        let (got, ev) = s.get(&id(2), &me(), t0 + Duration::from_secs(6));
        assert!(got.is_none());
        assert_eq!(ev, vec![EvictionReason::Ttl]);
        assert!(s.is_empty() && s.bytes() == 0);
    }

    #[test]
    fn a_reservation_holds_room_until_filled_or_abandoned() {
        let t0 = Instant::now();
        let (a, b) = (ClientId::named("a"), ClientId::named("b"));
        let mut s = SessionStore::new(1, 100, Duration::from_secs(5));
        assert!(s.reserve(id(1), &a, 10, t0).0.is_ok());
        // Neither usable, nor expired, nor released while its Share is sending.
        let late = t0 + Duration::from_secs(60);
        assert!(s.get(&id(1), &a, late).0.is_none());
        assert!(!s.release(&id(1), &a));
        assert!(s.reserve(id(2), &b, 10, late).0.is_err());
        assert!(
            s.reserve(id(2), &a, 10, late).0.is_err(),
            "its own reservation stays"
        );
        s.abandon(&id(1));
        assert!(s.is_empty());
        assert!(s.reserve(id(2), &b, 10, late).0.is_ok());
        assert!(s.fill(&id(2), Arc::new(()), late));
        s.abandon(&id(2));
        assert!(
            s.get(&id(2), &b, late).0.is_some(),
            "a filled session is not abandoned"
        );
    }

    #[test]
    fn one_client_over_its_limits_evicts_its_own_sessions_only() {
        let t0 = Instant::now();
        let (a, b) = (ClientId::named("a"), ClientId::named("b"));
        let mut s = SessionStore::new(10, 1000, Duration::from_secs(60)).with_client_limits(2, 100);
        put(&mut s, 1, &b, (), 10, t0).unwrap();
        for n in 2..=4 {
            let at = t0 + Duration::from_secs(u64::from(n));
            put(&mut s, n, &a, (), 10, at).unwrap();
        }
        // a keeps its two newest; b's older session is untouched.
        let later = t0 + Duration::from_secs(10);
        assert!(s.get(&id(2), &a, later).0.is_none());
        assert!(s.get(&id(3), &a, later).0.is_some() && s.get(&id(4), &a, later).0.is_some());
        assert!(s.get(&id(1), &b, later).0.is_some());
        // Only the owner can use a session.
        assert!(s.get(&id(1), &a, later).0.is_none());
        // Bytes per client: a's 95-byte session pushes out both of its own, not b's.
        let ev = put(&mut s, 5, &a, (), 95, later).unwrap();
        assert_eq!(ev, vec![EvictionReason::ClientLimit; 2]);
        assert!(s.get(&id(1), &b, later).0.is_some());
        // Over its own limit in a full store: refused before any of its own is evicted.
        let mut s = SessionStore::new(2, 1000, Duration::from_secs(60)).with_client_limits(1, 1000);
        put(&mut s, 1, &a, (), 10, t0).unwrap();
        put(&mut s, 2, &b, (), 10, t0).unwrap();
        assert_eq!(
            put(&mut s, 3, &a, (), 10, later),
            Ok(vec![EvictionReason::ClientLimit])
        );
        let mut s = SessionStore::new(2, 100, Duration::from_secs(60)).with_client_limits(1, 1000);
        put(&mut s, 1, &a, (), 10, t0).unwrap();
        put(&mut s, 2, &b, (), 80, t0).unwrap();
        assert!(put(&mut s, 3, &a, (), 30, later).is_err());
        assert!(
            s.get(&id(1), &a, later).0.is_some(),
            "a's own session kept on refusal"
        );
    }
}
