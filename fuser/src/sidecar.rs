//! The JSON files beside a checkpoint (`gating.json`, `context.json`): read and parsed with
//! errors that name the file.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{FuserError, Result};

/// Reads and parses the JSON file `path`; `what` names it in errors, `hint` (may be empty)
/// follows the path when the file cannot be read.
pub(crate) fn read_json<T: DeserializeOwned>(
    path: &Path,
    what: &'static str,
    hint: &str,
) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FuserError::input(what, format!("reading {}{hint}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| FuserError::input(what, format!("parsing {}: {e}", path.display())))
}
