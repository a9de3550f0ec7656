//! The shutdown signal of the service binaries: Ctrl-C or SIGTERM.

use std::future::Future;
use std::pin::Pin;

/// A shutdown future as the binaries hand it to a service's `serve`.
pub type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves on Ctrl-C or (on Unix) SIGTERM. If a handler cannot be installed, that signal is
/// logged and never fires; the other still does.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}
