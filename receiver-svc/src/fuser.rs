//! The fuser slot: how a decoded sharer cache becomes the receiver's prompt cache. The pair
//! config picks one; a trained C2C projector plugs in here when the c2c crate lands.

use crate::config::FuserKind;
use crate::decode::DecodedCache;
use crate::error::ReceiverError;

/// Turns a sharer cache into a receiver prompt cache.
pub trait Fuser: Send + Sync + std::fmt::Debug {
    /// Name for logs, errors and manifests.
    fn name(&self) -> &'static str;
    /// The receiver's prompt cache built from the sharer's.
    fn fuse(&self, sharer: DecodedCache) -> Result<DecodedCache, ReceiverError>;
}

/// Same model on both sides: the dequantized sharer cache is used as is, which measures what
/// quantization and selection alone do to accuracy.
#[derive(Debug)]
pub struct IdentityFuser {
    receiver_model: String,
}

impl IdentityFuser {
    /// An identity fuser for a receiver running `receiver_model` (its spec).
    pub fn new(receiver_model: String) -> Self {
        Self { receiver_model }
    }
}

impl Fuser for IdentityFuser {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn fuse(&self, sharer: DecodedCache) -> Result<DecodedCache, ReceiverError> {
        if sharer.sharer_model != self.receiver_model {
            return Err(ReceiverError::Transfer(format!(
                "identity fuser needs the same model on both sides: sharer {:?}, receiver {:?}",
                sharer.sharer_model, self.receiver_model
            )));
        }
        Ok(sharer)
    }
}

/// The fuser a pair config names, if any.
pub fn fuser_for(kind: FuserKind, receiver_model: &str) -> Option<Box<dyn Fuser>> {
    match kind {
        FuserKind::Identity => Some(Box::new(IdentityFuser::new(receiver_model.to_string()))),
        FuserKind::None => None,
    }
}
