//! Which sharer layer and which projector feed each receiver layer.
//!
//! The default is "last aligned": receiver layer t uses sharer layer
//! max(0, t - (L_receiver - L_sharer)) and projector t. The released checkpoints store the map as
//! `projector_config.json`: `{"<receiver model>": {"<sharer model>": {"<t>": [[src, idx], ...]}}}`,
//! with the receiver (base) model at index 0 and the sharer at index 1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{C2cError, Result};

/// One mapping entry: receiver layer `receiver` takes sharer layer `sharer` through projector
/// `projector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerLink {
    /// Receiver layer index.
    pub receiver: usize,
    /// Sharer layer index.
    pub sharer: usize,
    /// Projector index.
    pub projector: usize,
}

/// The layer map of a fuser: at most one link per receiver layer, sorted by receiver layer.
/// Receiver layers without a link keep their own cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMap {
    links: Vec<LayerLink>,
}

impl LayerMap {
    /// Builds a map after checking that receiver layers are unique; sorts by receiver layer.
    pub fn new(mut links: Vec<LayerLink>) -> Result<Self> {
        links.sort_by_key(|l| l.receiver);
        for pair in links.windows(2) {
            if pair[0].receiver == pair[1].receiver {
                return Err(C2cError::Config {
                    path: "layer map".into(),
                    message: format!("receiver layer {} linked twice", pair[0].receiver),
                });
            }
        }
        Ok(Self { links })
    }

    /// "Last aligned": receiver layer t <- sharer layer max(0, t - (L_r - L_s)), projector t.
    pub fn last_aligned(receiver_layers: usize, sharer_layers: usize) -> Self {
        let links = (0..receiver_layers)
            .map(|t| LayerLink {
                receiver: t,
                sharer: last_aligned_source(t, receiver_layers, sharer_layers),
                projector: t,
            })
            .collect();
        Self { links }
    }

    /// The links, sorted by receiver layer.
    pub fn links(&self) -> &[LayerLink] {
        &self.links
    }

    /// The receiver layers that have a link, increasing.
    pub fn linked_receivers(&self) -> Vec<usize> {
        self.links.iter().map(|l| l.receiver).collect()
    }

    /// The link of a receiver layer, if any.
    pub fn for_receiver(&self, layer: usize) -> Option<&LayerLink> {
        self.links
            .binary_search_by_key(&layer, |l| l.receiver)
            .ok()
            .map(|i| &self.links[i])
    }

    /// The same map restricted to links whose sharer layer is in `sharer_layers` (KVComm-like
    /// layer subsets: receiver layers fed by a layer that was not sent keep their own cache).
    pub fn restricted_to_sharer_layers(&self, sharer_layers: &[usize]) -> Self {
        let links = self
            .links
            .iter()
            .filter(|l| sharer_layers.contains(&l.sharer))
            .copied()
            .collect();
        Self { links }
    }

    /// Checks that every index is in range for the given layer and projector counts.
    pub fn validate(
        &self,
        receiver_layers: usize,
        sharer_layers: usize,
        projectors: usize,
    ) -> Result<()> {
        for l in &self.links {
            let bad = [
                ("receiver layer", l.receiver, receiver_layers),
                ("sharer layer", l.sharer, sharer_layers),
                ("projector", l.projector, projectors),
            ];
            for (what, value, limit) in bad {
                if value >= limit {
                    return Err(C2cError::Config {
                        path: "layer map".into(),
                        message: format!("{what} {value} out of range (count {limit})"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Parses the released `projector_config.json` text (receiver model 0, sharer model 1).
    /// Where a receiver layer lists several `[src, idx]` pairs, the first is used (upstream's
    /// fallback when no exact source match is requested).
    pub fn from_released_json(text: &str) -> Result<Self> {
        let err = |message: String| C2cError::Config {
            path: "projector_config.json".into(),
            message,
        };
        type Released = BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<(usize, usize)>>>>;
        let parsed: Released = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let by_layer = parsed
            .get("0")
            .and_then(|m| m.get("1"))
            .ok_or_else(|| err("no entry for receiver model \"0\" <- sharer model \"1\"".into()))?;
        let mut links = Vec::with_capacity(by_layer.len());
        for (layer, pairs) in by_layer {
            let receiver: usize = layer
                .parse()
                .map_err(|_| err(format!("receiver layer key {layer:?} is not an integer")))?;
            let &(sharer, projector) = pairs
                .first()
                .ok_or_else(|| err(format!("receiver layer {receiver} has no [src, idx] pair")))?;
            links.push(LayerLink {
                receiver,
                sharer,
                projector,
            });
        }
        Self::new(links)
    }

    /// Writes the map in the released `projector_config.json` shape.
    pub fn to_released_json(&self) -> String {
        let inner: BTreeMap<String, Vec<(usize, usize)>> = self
            .links
            .iter()
            .map(|l| (l.receiver.to_string(), vec![(l.sharer, l.projector)]))
            .collect();
        let outer = BTreeMap::from([("0", BTreeMap::from([("1", inner)]))]);
        serde_json::to_string(&outer).unwrap_or_default()
    }
}

/// The sharer layer that "last aligned" pairs with receiver layer `t`.
pub fn last_aligned_source(t: usize, receiver_layers: usize, sharer_layers: usize) -> usize {
    let source = t as i64 - (receiver_layers as i64 - sharer_layers as i64);
    source.clamp(0, sharer_layers.saturating_sub(1) as i64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_aligned_matches_the_formula() {
        // 30 receiver layers (SmolLM2) <- 24 sharer layers (Qwen2.5-0.5B): offset 6.
        let map = LayerMap::last_aligned(30, 24);
        assert_eq!(map.links().len(), 30);
        for t in 0..6 {
            assert_eq!(map.for_receiver(t).map(|l| l.sharer), Some(0));
        }
        assert_eq!(map.for_receiver(6).map(|l| l.sharer), Some(0));
        assert_eq!(map.for_receiver(7).map(|l| l.sharer), Some(1));
        assert_eq!(map.for_receiver(29).map(|l| l.sharer), Some(23));
        // Sharer deeper than receiver: the last layers line up, early sharer layers are unused.
        let map = LayerMap::last_aligned(28, 36);
        assert_eq!(map.for_receiver(0).map(|l| l.sharer), Some(8));
        assert_eq!(map.for_receiver(27).map(|l| l.sharer), Some(35));
        map.validate(28, 36, 28).expect("valid");
    }

    #[test]
    fn released_json_round_trips_and_rejects_bad_input() {
        let text = r#"{"0":{"1":{"0":[[0,0]],"1":[[0,1]],"2":[[1,2]]}}}"#;
        let map = LayerMap::from_released_json(text).expect("parse");
        assert_eq!(map.links().len(), 3);
        assert_eq!(
            map.for_receiver(2),
            Some(&LayerLink {
                receiver: 2,
                sharer: 1,
                projector: 2
            })
        );
        let again = LayerMap::from_released_json(&map.to_released_json()).expect("reparse");
        assert_eq!(again, map);
        assert!(LayerMap::from_released_json(r#"{"0":{"2":{}}}"#).is_err());
        assert!(LayerMap::from_released_json(r#"{"0":{"1":{"x":[[0,0]]}}}"#).is_err());
        assert!(LayerMap::from_released_json(r#"{"0":{"1":{"3":[]}}}"#).is_err());
        assert!(map.validate(3, 1, 3).is_err());
    }
}
