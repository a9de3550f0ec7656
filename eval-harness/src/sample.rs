//! Seeded subsets and shards that are the same on every run and machine: items are ordered by
//! a fixed 64-bit hash of (seed, id), independent of input order and of any RNG crate version.

use crate::example::Example;

/// 64-bit FNV-1a: a fixed, platform-independent hash for seeding per-item orders.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64 finaliser: spreads FNV's weak low bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The sort key of `id` under `seed`.
pub fn order_key(seed: u64, id: &str) -> u64 {
    let mut bytes = seed.to_le_bytes().to_vec();
    bytes.extend_from_slice(id.as_bytes());
    mix(fnv1a(&bytes))
}

/// All examples in the seeded order (ties broken by id).
pub fn seeded_order(examples: &[Example], seed: u64) -> Vec<Example> {
    let mut keyed: Vec<(u64, &Example)> = examples
        .iter()
        .map(|e| (order_key(seed, &e.id), e))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    keyed.into_iter().map(|(_, e)| e.clone()).collect()
}

/// The first `n` examples of the seeded order (all of them when `n` exceeds the count).
pub fn subset(examples: &[Example], n: usize, seed: u64) -> Vec<Example> {
    let mut ordered = seeded_order(examples, seed);
    ordered.truncate(n);
    ordered
}

/// Shard `i` of `k` (round-robin over the given order); `None` unless `i < k`.
pub fn shard(examples: &[Example], i: usize, k: usize) -> Option<Vec<Example>> {
    (i < k).then(|| examples.iter().skip(i).step_by(k).cloned().collect())
}

/// Parses a shard spec `i/k` (with `i < k`).
pub fn parse_shard(spec: &str) -> Option<(usize, usize)> {
    let (i, k) = spec.split_once('/')?;
    let (i, k) = (i.trim().parse().ok()?, k.trim().parse().ok()?);
    (i < k).then_some((i, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                id: format!("item-{i}"),
                dataset: "t".into(),
                question: String::new(),
                choices: vec![],
                labels: vec![],
                gold: None,
                answer_text: None,
                passage: None,
            })
            .collect()
    }

    fn ids(v: &[Example]) -> Vec<&str> {
        v.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn subsets_are_fixed_per_seed_and_independent_of_input_order() {
        let all = items(100);
        let mut reversed = all.clone();
        reversed.reverse();
        let a = subset(&all, 10, 0);
        assert_eq!(ids(&a), ids(&subset(&reversed, 10, 0)));
        assert_ne!(ids(&a), ids(&subset(&all, 10, 1)));
        assert_eq!(
            ids(&subset(&all, 20, 0))[..10],
            ids(&a)[..],
            "a larger subset extends a smaller one"
        );
        // Pinned: a change here changes every published subset.
        assert_eq!(order_key(0, "item-0"), 0xcd3b_0348_c61a_8dad);
        assert_eq!(subset(&all, 1000, 3).len(), 100);
    }

    #[test]
    fn shards_partition_the_items() {
        let all = subset(&items(23), 23, 7);
        let shards: Vec<Vec<Example>> = (0..4).map(|i| shard(&all, i, 4).unwrap()).collect();
        assert_eq!(shards.iter().map(Vec::len).sum::<usize>(), 23);
        let mut seen: Vec<&str> = shards.iter().flat_map(|s| ids(s)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 23);
        assert!(shard(&all, 4, 4).is_none());
        assert_eq!(parse_shard("1/4"), Some((1, 4)));
        assert_eq!(parse_shard("4/4"), None);
        assert_eq!(parse_shard("x/4"), None);
    }
}
