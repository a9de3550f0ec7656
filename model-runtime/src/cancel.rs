//! Cooperative cancellation of model work: a cheap shared flag ([`CancelToken`], with an
//! optional deadline) that the forward pass checks before every layer, failing with
//! [`RuntimeError::Cancelled`] once it is set or the deadline has passed.
//!
//! The token is not a parameter of the runtime's functions: [`CancelToken::scope`] installs
//! it for the current thread while a closure runs, and every forward pass on that thread
//! (prefill, query-attention scoring, each step of generation, continuation scoring) checks
//! it. A service runs each request's model work on one blocking thread inside the scope of
//! the request's token, and sets the token when the request goes away. Outside any scope the
//! check is a thread-local read of `None`.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Result, RuntimeError};

/// A flag shared between whoever may cancel and the work that checks it (clones share it),
/// and an optional deadline after which it counts as set.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

thread_local! {
    static CURRENT: RefCell<Option<CancelToken>> = const { RefCell::new(None) };
}

/// Puts the previous token back when a scope ends, even by a panic.
struct Restore(Option<CancelToken>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

impl CancelToken {
    /// A token not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// This token, also cancelled once `deadline` (if any) has passed.
    pub fn until(self, deadline: Option<Instant>) -> Self {
        Self { deadline, ..self }
    }

    /// Asks the work checking this token to stop at its next check.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
    }

    /// Whether [`CancelToken::cancel`] was called or the deadline has passed.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Runs `f` with this token as the current thread's: model work inside `f` stops with
    /// [`RuntimeError::Cancelled`] at its next check once the token is cancelled. Scopes
    /// nest; the outer token is back when `f` returns.
    pub fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));
        let _restore = Restore(previous);
        f()
    }
}

/// Fails with [`RuntimeError::Cancelled`] when the current thread's token is cancelled.
pub fn checkpoint() -> Result<()> {
    #[cfg(test)]
    tests::count_check();
    let cancelled = CURRENT.with(|c| c.borrow().as_ref().is_some_and(CancelToken::is_cancelled));
    if cancelled {
        Err(RuntimeError::Cancelled)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use candle_core::{DType, Device};

    use super::*;
    use crate::{Arch, Model, ModelConfig};

    thread_local! {
        /// Checks made on this thread, and the check at which to cancel the current token.
        static CHECKS: Cell<usize> = const { Cell::new(0) };
        static CANCEL_AT: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// Counts a check; at the check [`CANCEL_AT`] names, cancels the current token (as a
    /// client going away in the middle of a pass would).
    pub(super) fn count_check() {
        let n = CHECKS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        if CANCEL_AT.with(Cell::get) == Some(n) {
            CURRENT.with(|c| c.borrow().as_ref().map(CancelToken::cancel));
        }
    }

    fn checks_during<T>(cancel_at: Option<usize>, f: impl FnOnce() -> T) -> (T, usize) {
        CHECKS.with(|c| c.set(0));
        CANCEL_AT.with(|c| c.set(cancel_at));
        let out = f();
        CANCEL_AT.with(|c| c.set(None));
        (out, CHECKS.with(Cell::get))
    }

    #[test]
    fn a_token_set_mid_pass_stops_the_forward_pass_between_layers() {
        let config = ModelConfig {
            n_layers: 4,
            ..ModelConfig::tiny(Arch::Llama)
        };
        let model = Model::random(&config, 3, &Device::Cpu, DType::F32).unwrap();
        let input = model.ids_tensor(&[5, 17, 42, 99]).unwrap();
        // Not cancelled: one check before each layer, and the pass completes.
        let token = CancelToken::new();
        let (done, checks) = checks_during(None, || token.scope(|| model.prefill(&input)));
        let (_, mut cache) = done.unwrap();
        assert_eq!(checks, 4);
        // Cancelled while layer 1 runs (at the check before layer 2): the pass stops there
        // with the typed error, and the caller's cache is left as it was.
        let token = CancelToken::new();
        let more = model.ids_tensor(&[7, 7]).unwrap();
        let (stopped, checks) = checks_during(Some(2), || {
            token.scope(|| model.forward(&more, 4, &mut cache))
        });
        assert!(
            matches!(stopped, Err(RuntimeError::Cancelled)),
            "{stopped:?}"
        );
        assert_eq!(checks, 2, "no layer after the cancellation ran");
        assert!(token.is_cancelled());
        assert_eq!(cache.seq_len(), 4);
        // Generation stops too (each step is a forward pass), before its first layer.
        let (generated, _) = checks_during(None, || {
            token.scope(|| {
                let params = crate::GenerateParams {
                    max_new_tokens: 8,
                    stop_ids: vec![],
                };
                model.generate_greedy(&[5, 17], &params)
            })
        });
        assert!(matches!(generated, Err(RuntimeError::Cancelled)));
    }

    #[test]
    fn a_check_fails_only_inside_the_scope_of_a_cancelled_token() {
        assert!(checkpoint().is_ok());
        let token = CancelToken::new();
        token.scope(|| assert!(checkpoint().is_ok()));
        token.cancel();
        assert!(matches!(
            token.scope(checkpoint),
            Err(RuntimeError::Cancelled)
        ));
        // Nested: the inner token governs, and the outer one is back after it.
        let outer = CancelToken::new();
        outer.scope(|| {
            assert!(matches!(
                token.scope(checkpoint),
                Err(RuntimeError::Cancelled)
            ));
            assert!(checkpoint().is_ok());
        });
        assert!(checkpoint().is_ok());
        // A deadline that has passed counts as cancelled.
        let now = Instant::now();
        let late = CancelToken::new().until(Some(now));
        assert!(late.is_cancelled());
        assert!(matches!(
            late.scope(checkpoint),
            Err(RuntimeError::Cancelled)
        ));
        let early = CancelToken::new().until(Some(now + std::time::Duration::from_secs(60)));
        assert!(early.scope(checkpoint).is_ok());
    }
}
