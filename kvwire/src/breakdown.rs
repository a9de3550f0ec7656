//! Per-blob byte accounting: the `bytes_measured_breakdown` of the data capture contract.

use std::ops::{Add, AddAssign};

/// Bytes of one blob, frame or stream by section. `total()` equals the encoded length.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Breakdown {
    /// Magic, fixed or JSON header, length fields and checksums.
    pub header: u64,
    /// Token position indices.
    pub indices: u64,
    /// Quantized (or fp16, or entropy-coded) K and V values.
    pub payload: u64,
    /// Quantization scales of K and V.
    pub scales: u64,
}

impl Breakdown {
    /// Sum of all sections.
    pub fn total(&self) -> u64 {
        self.header + self.indices + self.payload + self.scales
    }
}

impl Add for Breakdown {
    type Output = Breakdown;
    fn add(self, o: Breakdown) -> Breakdown {
        Breakdown {
            header: self.header + o.header,
            indices: self.indices + o.indices,
            payload: self.payload + o.payload,
            scales: self.scales + o.scales,
        }
    }
}

impl AddAssign for Breakdown {
    fn add_assign(&mut self, o: Breakdown) {
        *self = *self + o;
    }
}
