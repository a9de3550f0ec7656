//! Loaders for Hugging Face style files a user may already have: JSONL (optionally gzipped)
//! and Arrow IPC stream files (`datasets.save_to_disk`). Parquet is not supported (the
//! `parquet` crate's build cost was judged too high here); convert with
//! `datasets.Dataset.to_json` first.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::Value;

use crate::arrow_rows::read_stream_records;
use crate::error::DataError;
use crate::example::Example;
use crate::olmo::record_error;
use crate::records::example_from_record;

/// Most records read from one file.
pub const MAX_RECORDS: usize = 1_000_000;

/// Loads `path` (by extension: `.jsonl`, `.json`, `.jsonl.gz`, `.arrow`), labelling examples
/// with `dataset` (for example `arc_challenge/test`).
pub fn load_file(path: &Path, dataset: &str) -> Result<Vec<Example>, DataError> {
    let name = path.to_string_lossy().into_owned();
    let file = File::open(path).map_err(DataError::io("open", path))?;
    if name.ends_with(".arrow") {
        let rows = read_stream_records(BufReader::new(file), &name)?;
        return rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                example_from_record(dataset, row, i).map_err(|e| record_error(e, &name, i))
            })
            .collect();
    }
    if name.ends_with(".gz") {
        return load_jsonl(flate2::read::GzDecoder::new(file), dataset, &name);
    }
    load_jsonl(file, dataset, &name)
}

/// The JSON values of a JSON-lines stream with their line numbers (0-based; blank lines
/// skipped); a line that cannot be read or parsed is a [`DataError::Json`] naming it.
pub(crate) fn jsonl_values<'a>(
    reader: impl Read + 'a,
    source_name: &'a str,
) -> impl Iterator<Item = Result<(usize, Value), DataError>> + 'a {
    BufReader::new(reader)
        .lines()
        .enumerate()
        .filter_map(move |(i, line)| {
            let json_err = |reason: String| DataError::Json {
                source_name: source_name.to_owned(),
                record: i,
                reason,
            };
            match line {
                Err(e) => Some(Err(json_err(e.to_string()))),
                Ok(line) if line.trim().is_empty() => None,
                Ok(line) => Some(
                    serde_json::from_str(&line)
                        .map(|value| (i, value))
                        .map_err(|e| json_err(e.to_string())),
                ),
            }
        })
}

/// Loads JSON-lines records (one object per line; blank lines ignored).
pub fn load_jsonl(
    reader: impl Read,
    dataset: &str,
    source_name: &str,
) -> Result<Vec<Example>, DataError> {
    let mut out = Vec::new();
    for record in jsonl_values(reader, source_name) {
        let (i, value) = record?;
        if out.len() >= MAX_RECORDS {
            return Err(DataError::TooManyRecords {
                source_name: source_name.to_owned(),
                max: MAX_RECORDS,
            });
        }
        out.push(
            example_from_record(dataset, &value, i).map_err(|e| record_error(e, source_name, i))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn jsonl_and_gzipped_jsonl_files_load_the_same_examples() {
        let dir = tempfile::tempdir().unwrap();
        let text = concat!(
            r#"{"id":"a","question":"Q1","choices":{"text":["x","y"],"label":["A","B"]},"answerKey":"B"}"#,
            "\n\n",
            r#"{"id":"b","question":"Q2","choices":{"text":["x","y","z"],"label":["1","2","3"]},"answerKey":"1"}"#,
            "\n"
        );
        let plain = dir.path().join("arc.jsonl");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("arc.jsonl.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let a = load_file(&plain, "arc_challenge/test").unwrap();
        assert_eq!(a, load_file(&gz, "arc_challenge/test").unwrap());
        assert_eq!(
            a.iter().map(|e| e.gold).collect::<Vec<_>>(),
            [Some(1), Some(0)]
        );
    }

    #[test]
    fn bad_lines_and_missing_files_are_typed_errors() {
        let err = load_jsonl("{\"q\":1}\n".as_bytes(), "x", "f.jsonl").unwrap_err();
        assert!(
            matches!(err, DataError::UnknownLayout { record: 0, .. }),
            "{err}"
        );
        let err = load_jsonl("{}\n{oops".as_bytes(), "x", "f.jsonl").unwrap_err();
        assert!(
            matches!(
                err,
                DataError::UnknownLayout { .. } | DataError::Json { .. }
            ),
            "{err}"
        );
        let err = load_file(Path::new("/nonexistent/file.jsonl"), "x").unwrap_err();
        assert!(matches!(err, DataError::Io { .. }));
    }
}
