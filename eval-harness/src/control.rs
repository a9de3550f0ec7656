//! The random-passage control of the context layout: each item is paired with another item's
//! passage, drawn uniformly among the other items from a stream of its own (seed and index),
//! so an evaluation cut into chunks, shards or services draws what a straight one does.
//! `fuser eval --layout context` and the coordinator's `passage = "random_other"` methods use
//! these two functions, so on the same items in the same order they read the same passages.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The draw stream of item `index` under `seed`.
pub fn control_rng(seed: u64, index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0xc0417 ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The item whose passage item `index` of `len` reads under the control: a uniformly drawn
/// other item (never itself when there is another; itself when it is alone).
pub fn other_item(rng: &mut impl Rng, index: usize, len: usize) -> usize {
    if len < 2 {
        return index;
    }
    let j = rng.random_range(0..len - 1);
    if j >= index { j + 1 } else { j }
}

/// The first control draw of item `index` of `len` under `seed` (what `fuser eval`'s
/// `random_passage` method reads).
pub fn control_item(seed: u64, index: usize, len: usize) -> usize {
    other_item(&mut control_rng(seed, index), index, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_reads_another_items_passage_uniformly() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut seen = [0usize; 5];
        for _ in 0..2000 {
            for i in 0..5 {
                let j = other_item(&mut rng, i, 5);
                assert_ne!(i, j);
                assert!(j < 5);
                seen[j] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n > 1700), "{seen:?}");
        assert_eq!(other_item(&mut rng, 0, 1), 0);
    }

    #[test]
    fn each_item_draws_from_its_own_stream() {
        let draw = |i| control_rng(0, i).random::<u64>();
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        assert_eq!(control_item(7, 3, 10), control_item(7, 3, 10));
        assert_ne!(
            (0..10).map(|i| control_item(0, i, 10)).collect::<Vec<_>>(),
            (0..10).map(|i| control_item(1, i, 10)).collect::<Vec<_>>()
        );
    }
}
