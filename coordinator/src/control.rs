//! The random-passage control as the coordinator runs it: a cell whose method reads
//! `passage = "random_other"` gets its dataset slice with every item's passage replaced by
//! another item's, so the services run the same fuser on the item's question after a passage
//! that does not answer it. The draw is `eval_harness::control_item` over the slice's
//! evaluation order (item `i` of `n` under the cell's seed), the one `fuser eval --layout
//! context` uses for its `random_passage` method: on the same items in the same order, with the
//! cell's seed equal to `fuser eval --seed`, both pair each item with the same other passage.
//! Plain data, no I/O.

use std::collections::BTreeMap;

use eval_harness::control_item;
use kvwire_proto::v1 as pb;

/// The slice `examples` (by id) with item `i` of `ids` (the evaluation order) reading the
/// passage of item `control_item(seed, i, ids.len())`: never its own while the slice has two
/// items or more. Ids not in `examples` are skipped (the runner reports them missing).
pub fn with_other_passages(
    ids: &[String],
    examples: &BTreeMap<String, pb::Example>,
    seed: u64,
) -> BTreeMap<String, pb::Example> {
    let mut out = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(example) = examples.get(id) else {
            continue;
        };
        let other = &ids[control_item(seed, i, ids.len())];
        let passage = examples
            .get(other)
            .map(|e| e.passage.clone())
            .unwrap_or_default();
        out.insert(
            id.clone(),
            pb::Example {
                passage,
                ..example.clone()
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(n: usize) -> (Vec<String>, BTreeMap<String, pb::Example>) {
        let ids: Vec<String> = (0..n).map(|i| format!("item-{i}")).collect();
        let examples = ids
            .iter()
            .map(|id| {
                let e = pb::Example {
                    id: id.clone(),
                    question: format!("question of {id}"),
                    passage: format!("passage of {id}"),
                    ..Default::default()
                };
                (id.clone(), e)
            })
            .collect();
        (ids, examples)
    }

    #[test]
    fn every_item_reads_another_items_passage_deterministically() {
        let (ids, examples) = slice(30);
        let control = with_other_passages(&ids, &examples, 0);
        assert_eq!(control.len(), 30);
        for (i, id) in ids.iter().enumerate() {
            let e = &control[id];
            assert_eq!(
                e.question, examples[id].question,
                "the question is the item's"
            );
            assert_ne!(
                e.passage, examples[id].passage,
                "{id} reads its own passage"
            );
            let j = control_item(0, i, 30);
            assert_eq!(e.passage, examples[&ids[j]].passage);
        }
        assert_eq!(control, with_other_passages(&ids, &examples, 0));
        let reseeded = with_other_passages(&ids, &examples, 1);
        assert!(
            ids.iter()
                .any(|id| reseeded[id].passage != control[id].passage)
        );
    }

    #[test]
    fn a_single_item_keeps_its_passage_and_missing_ids_are_skipped() {
        let (ids, examples) = slice(1);
        let control = with_other_passages(&ids, &examples, 3);
        assert_eq!(control["item-0"].passage, "passage of item-0");
        let mut ids = ids;
        ids.push("gone".into());
        assert_eq!(with_other_passages(&ids, &examples, 3).len(), 1);
    }
}
