//! Why [`crate::serve`] could not start the receiver or stopped serving.

use service_kit::server::ServeError;

use crate::error::ReceiverError;

/// Why the receiver could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverServeError {
    /// Configuration, model loading or the gRPC server (the steps both services share).
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The pair's fuser (named by the configuration) could not be loaded.
    #[error("loading the pair's fuser: {source}")]
    Fuser {
        /// Why.
        source: ReceiverError,
    },
}
