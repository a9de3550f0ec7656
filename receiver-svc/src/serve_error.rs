//! Why [`crate::serve`] could not start the receiver or stopped serving.

use service_kit::server::ServeError;
use service_kit::transport::client::ClientError;

use crate::error::ReceiverError;

/// Why the receiver could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverServeError {
    /// Configuration, model loading or the gRPC server (the steps both services share).
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// `[sharer_client]` is unusable (validation reports it first; kept for a file that
    /// changed in between).
    #[error("sharer_client: {source}")]
    SharerClient {
        /// Why.
        source: ClientError,
    },
    /// The pair's fuser (named by the configuration) could not be loaded.
    #[error("loading the pair's fuser: {source}")]
    Fuser {
        /// Why.
        source: ReceiverError,
    },
}
