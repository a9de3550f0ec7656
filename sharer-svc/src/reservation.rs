//! A kept session's room in the shared store, held by its Share from after prefill until its
//! frames are out: filled with the session then, or given back if the Share fails or its
//! client goes away (the guard's drop). Eviction and gauge metrics are updated here for every
//! change the Share makes to the store.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use service_kit::metrics_catalog::{SESSIONS_ACTIVE, SESSIONS_EVICTED};
use service_kit::transport::identity::ClientId;

use crate::error::SharerError;
use crate::session_state::HeldSession;
use crate::sessions::{EvictionReason, SessionStore};

/// The store the service shares between its calls.
pub type SharedStore = Arc<Mutex<SessionStore<HeldSession>>>;

/// Counts sessions that left the store, by reason.
pub fn count_evictions(evicted: &[EvictionReason]) {
    for reason in evicted {
        metrics::counter!(SESSIONS_EVICTED, "reason" => reason.label()).increment(1);
    }
}

/// The store, locked (a poisoned lock is taken over: the store's state is checked per call).
pub fn lock(store: &SharedStore) -> std::sync::MutexGuard<'_, SessionStore<HeldSession>> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// Room reserved for one session; dropped unfilled, it is given back.
#[derive(Debug)]
pub struct Reservation {
    store: SharedStore,
    id: [u8; 16],
    filled: bool,
}

impl Reservation {
    /// Reserves `bytes` for `owner`'s session `id`, or refuses (`SessionStoreFull`).
    pub fn make(
        store: SharedStore,
        id: [u8; 16],
        owner: &ClientId,
        bytes: u64,
    ) -> Result<Self, SharerError> {
        let outcome = {
            let mut s = lock(&store);
            let (outcome, evicted) = s.reserve(id, owner, bytes, Instant::now());
            metrics::gauge!(SESSIONS_ACTIVE).set(s.len() as f64);
            count_evictions(&evicted);
            outcome
        };
        if let Err(e) = &outcome {
            tracing::warn!(bytes, "session not kept: {e}");
        }
        outcome?;
        Ok(Self {
            store,
            id,
            filled: false,
        })
    }

    /// Stores the session in its room; its TTL starts now.
    pub fn fill(mut self, held: HeldSession) {
        let mut s = lock(&self.store);
        // Only a reservation is filled; it cannot have left the store but by `abandon`.
        self.filled = s.fill(&self.id, Arc::new(held), Instant::now());
        metrics::gauge!(SESSIONS_ACTIVE).set(s.len() as f64);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.filled {
            let mut s = lock(&self.store);
            s.abandon(&self.id);
            metrics::gauge!(SESSIONS_ACTIVE).set(s.len() as f64);
        }
    }
}
