//! Sharer service: prefill, selection, quantization and KVWire streaming over gRPC, refinement sessions.
