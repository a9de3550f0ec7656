//! Why a record cannot be applied to a host cache: one variant per round rule.

use crate::error::DecodeError;

/// Why a frame cannot be applied to the cache.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The record itself is malformed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A frame came before the round's session header, or the round ended without one.
    #[error("no session header before the frames")]
    NoSession,
    /// A round's session header does not continue the cache it refines.
    #[error(
        "round {round} session header ({layers} layers, {tokens} tokens) does not match the held cache ({held_layers} layers, {held_tokens} tokens)"
    )]
    SessionMismatch {
        /// The header's round.
        round: u8,
        /// Layers it announces.
        layers: usize,
        /// Prompt tokens it announces.
        tokens: usize,
        /// Layers held.
        held_layers: usize,
        /// Prompt tokens held.
        held_tokens: usize,
    },
    /// A frame's layer or shape is not the session's.
    #[error(
        "frame for layer {layer} of shape {shape:?} does not match the session ({layers} layers, {heads} heads, {head_dim} dims)"
    )]
    Shape {
        /// The frame's layer.
        layer: usize,
        /// The frame's `[B, H, T, D]`.
        shape: [usize; 4],
        /// Layers in the session.
        layers: usize,
        /// KV heads in the session.
        heads: usize,
        /// Head dimension in the session.
        head_dim: usize,
    },
    /// A layer received a second residual frame in one round.
    #[error("layer {layer} sent twice in one round")]
    DuplicateLayer {
        /// The layer.
        layer: usize,
    },
    /// A layer received two base frames of the same precision group in one round.
    #[error("layer {layer} received precision group {group} twice in one round")]
    DuplicateGroup {
        /// The layer.
        layer: usize,
        /// The precision group.
        group: u8,
    },
    /// A layer received both base and residual frames in one round.
    #[error("layer {layer} received base and residual frames in one round")]
    MixedKinds {
        /// The layer.
        layer: usize,
    },
    /// A position at or past the prompt's last token (which the receiver runs itself).
    #[error("position {position} is outside the shareable prompt ({prompt_tokens} tokens)")]
    OutsidePrompt {
        /// The position.
        position: u32,
        /// Tokens of the prompt.
        prompt_tokens: usize,
    },
    /// A base frame for a position the cache already holds.
    #[error("layer {layer} received position {position}, which it already holds")]
    AlreadyHeld {
        /// The layer.
        layer: usize,
        /// The position.
        position: u32,
    },
    /// Layers that hold different positions when the round ends.
    #[error("layer {layer} positions differ from the other layers of the round")]
    PositionsDiffer {
        /// The layer.
        layer: usize,
    },
    /// A residual (or a gather) for a position the cache does not hold.
    #[error("position {position} is not held")]
    NotHeld {
        /// The position.
        position: u32,
    },
    /// A layer index past the cache.
    #[error("layer {layer} is not in the cache")]
    NoSuchLayer {
        /// The layer.
        layer: usize,
    },
    /// The round ended before every layer arrived.
    #[error("{got} of {expected} layers arrived")]
    MissingLayers {
        /// Layers that arrived.
        got: usize,
        /// Layers announced.
        expected: usize,
    },
    /// The round ended before every frame its session header announced (`frames`) arrived.
    #[error("{got} of the {announced} frames the session header announced arrived")]
    MissingFrames {
        /// Frames that arrived.
        got: usize,
        /// Frames announced.
        announced: u32,
    },
    /// More frames arrived than the session header announced.
    #[error("{got} frames arrived; the session header announced {announced}")]
    ExtraFrames {
        /// Frames that arrived.
        got: usize,
        /// Frames announced.
        announced: u32,
    },
}
