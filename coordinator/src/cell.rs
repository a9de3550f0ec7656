//! Grid expansion: the cartesian product of a grid's axes, resolved into cells. Each cell's id
//! is a stable hash (sha256 of canonical JSON, keys sorted) of its resolved config, so the same
//! experiment has the same id in every grid and every run, and the registry can skip it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::grid::{DatasetSpec, Grid, Layout, ModelSpec, RankNormalization, Scoring};
use crate::method::MethodSpec;

/// Hex characters of the sha256 kept in a cell id (64 bits).
pub const CELL_ID_HEX_LEN: usize = 16;

/// The pair part of a resolved cell (the pair's method filter is not part of the experiment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellPair {
    /// The pair's label.
    pub label: String,
    /// The sharer's model.
    pub sharer: ModelSpec,
    /// The receiver's model.
    pub receiver: ModelSpec,
    /// The fuser checkpoint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuser: Option<String>,
}

/// One fully resolved experiment: everything that determines its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellConfig {
    /// Sharer/receiver pair.
    pub pair: CellPair,
    /// Dataset slice.
    pub dataset: DatasetSpec,
    /// Method label (a column in tables).
    pub method_label: String,
    /// Method and settings.
    pub method: MethodSpec,
    /// Scoring mode.
    pub scoring: Scoring,
    /// Rank scoring's normalisation (absent for other modes, so their ids do not change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_normalization: Option<RankNormalization>,
    /// Per-sample byte cap, when the method sends a payload and a cap applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_cap_bytes: Option<u64>,
    /// Seed, when the method is randomized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Deadline of one sample, seconds.
    pub sample_timeout_s: u64,
    /// Prompt layout (absent for the default shared prompt, so existing ids do not change).
    #[serde(default, skip_serializing_if = "Layout::is_shared")]
    pub layout: Layout,
    /// The link profile between receiver and sharer, when the grid has a `links` axis (absent
    /// otherwise, so existing ids do not change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// A cell: its id and its resolved config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Stable id: the first [`CELL_ID_HEX_LEN`] hex digits of sha256(canonical JSON of config).
    pub id: String,
    /// The resolved config.
    pub config: CellConfig,
}

impl CellConfig {
    /// The pair's label, with `@<link>` when the cell names a link profile: what tables and
    /// figures show, so that cells on different links stay apart.
    pub fn pair_link_label(&self) -> String {
        match &self.link {
            Some(link) => format!("{}@{link}", self.pair.label),
            None => self.pair.label.clone(),
        }
    }

    /// The cell id of this config.
    pub fn id(&self) -> String {
        let value = serde_json::to_value(self).expect("a cell config always serializes");
        let digest = Sha256::digest(canonical_json(&value).as_bytes());
        hex::encode(digest)[..CELL_ID_HEX_LEN].to_string()
    }
}

/// JSON text with object keys sorted at every level and no spaces, independent of the
/// `serde_json` map implementation the workspace happens to enable.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Expands a validated grid into cells, in grid order, dropping cells whose resolved config
/// repeats an earlier one (an axis that does not apply to a method adds no cells).
pub fn expand(grid: &Grid) -> Vec<Cell> {
    let mut budgets: Vec<Option<u64>> = grid.budgets.iter().copied().map(Some).collect();
    if budgets.is_empty() || grid.uncapped {
        budgets.push(None);
    }
    let mut cells: Vec<Cell> = Vec::new();
    for pair in &grid.pairs {
        let cell_pair = CellPair {
            label: pair.label.clone(),
            sharer: pair.sharer.clone(),
            receiver: pair.receiver.clone(),
            fuser: pair.fuser.clone(),
        };
        let methods = grid
            .methods
            .iter()
            .filter(|m| pair.methods.is_empty() || pair.methods.contains(&m.label()));
        for method in methods {
            for dataset in &grid.datasets {
                for &scoring in &grid.scoring {
                    for &budget in &budgets {
                        for &seed in &grid.seeds {
                            let config = CellConfig {
                                pair: cell_pair.clone(),
                                dataset: dataset.clone(),
                                method_label: method.label(),
                                method: method.clone(),
                                scoring,
                                rank_normalization: (scoring == Scoring::Rank)
                                    .then_some(grid.rank_normalization),
                                budget_cap_bytes: method
                                    .own_cap()
                                    .or_else(|| budget.filter(|_| method.uses_budget_axis())),
                                seed: method.uses_seed().then_some(seed),
                                sample_timeout_s: grid.limits.sample_timeout_s,
                                layout: grid.layout,
                                link: None,
                            };
                            let id = config.id();
                            if !cells.iter().any(|c| c.id == id) {
                                cells.push(Cell { id, config });
                            }
                        }
                    }
                }
            }
        }
    }
    with_links(grid, cells)
}

/// Each cell once per link of the grid's `links` axis, links innermost (the cells as they are
/// when the grid has none).
fn with_links(grid: &Grid, cells: Vec<Cell>) -> Vec<Cell> {
    if grid.links.is_empty() {
        return cells;
    }
    let mut out = Vec::new();
    for cell in cells {
        for link in &grid.links {
            let mut config = cell.config.clone();
            config.link = Some(link.clone());
            out.push(Cell {
                id: config.id(),
                config,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(extra: &str) -> Grid {
        let text = format!(
            r#"
            name = "g"
            budgets = [256, 1024]
            seeds = [1, 2]
            {extra}
            [[pairs]]
            label = "s<-s"
            sharer = {{ model = "gguf:smol" }}
            receiver = {{ model = "gguf:smol" }}
            [[pairs]]
            label = "q<-s"
            sharer = {{ model = "gguf:qwen" }}
            receiver = {{ model = "gguf:smol" }}
            methods = ["receiver-only", "text-raw"]
            [[datasets]]
            name = "arc_easy"
            split = "test"
            n = 5
            [[methods]]
            kind = "receiver_only"
            [[methods]]
            kind = "text"
            mode = "raw"
            [[methods]]
            kind = "kv"
            precision = "int8"
            [[methods]]
            kind = "kv"
            precision = "int4"
            selection = "random"
            keep = 0.5
            "#
        );
        Grid::from_toml(&text).unwrap()
    }

    #[test]
    fn expansion_applies_axes_only_where_they_matter() {
        let cells = expand(&grid(""));
        // s<-s: receiver-only 1 (its id equals q<-s's? no: pair differs) + text 2 budgets
        // + kv-int8 2 budgets + random 2 budgets x 2 seeds = 9; q<-s: 1 + 2 = 3.
        assert_eq!(cells.len(), 12);
        // `uncapped` adds the cap-free end of each curve: 1 + 1 + 2 more on s<-s, 1 on q<-s.
        assert_eq!(expand(&grid("uncapped = true")).len(), 17);
        let random: Vec<_> = cells.iter().filter(|c| c.config.seed.is_some()).collect();
        assert_eq!(random.len(), 4);
        assert!(
            cells
                .iter()
                .filter(|c| c.config.method_label == "receiver-only")
                .all(|c| c.config.budget_cap_bytes.is_none())
        );
    }

    #[test]
    fn links_multiply_the_cells_and_leave_link_free_ids_alone() {
        let plain = expand(&grid(""));
        let linked = expand(&grid(r#"links = ["loopback", "100mbit-20ms"]"#));
        assert_eq!(linked.len(), 2 * plain.len());
        // Links innermost: each plain cell, then the same cell on each link, in order.
        for (i, cell) in plain.iter().enumerate() {
            let (a, b) = (&linked[2 * i], &linked[2 * i + 1]);
            assert_eq!(a.config.link.as_deref(), Some("loopback"));
            assert_eq!(b.config.link.as_deref(), Some("100mbit-20ms"));
            let mut back = a.config.clone();
            back.link = None;
            assert_eq!(back.id(), cell.id, "a cell without a link keeps its id");
            assert_ne!(a.id, b.id);
            assert_eq!(
                b.config.pair_link_label(),
                format!("{}@100mbit-20ms", cell.config.pair.label)
            );
        }
        assert!(
            plain
                .iter()
                .all(|c| c.config.pair_link_label() == c.config.pair.label)
        );
        let mut bad = grid("");
        bad.links = ["56k", "loopback", "loopback"].map(String::from).to_vec();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("unknown link profile \"56k\""), "{err}");
        assert!(err.contains("\"loopback\" appears twice"), "{err}");
    }

    #[test]
    fn ids_are_stable_and_unique() {
        let a = expand(&grid(""));
        let b = expand(&grid("description = \"other text\""));
        assert_eq!(
            a.iter().map(|c| &c.id).collect::<Vec<_>>(),
            b.iter().map(|c| &c.id).collect::<Vec<_>>()
        );
        let mut ids: Vec<_> = a.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), a.len());
        assert!(
            a.iter()
                .all(|c| c.id.len() == CELL_ID_HEX_LEN && c.id == c.config.id())
        );
    }

    #[test]
    fn id_changes_with_any_setting() {
        let cell = expand(&grid("")).remove(0);
        let mut other = cell.config.clone();
        other.dataset.seed += 1;
        assert_ne!(other.id(), cell.id);
        let mut other = cell.config.clone();
        other.sample_timeout_s += 1;
        assert_ne!(other.id(), cell.id);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":[{"y":1,"x":2}],"c":"é"}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"é","z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn id_is_pinned_for_a_known_config() {
        // Changing the hashing would orphan every existing run folder's registry.
        let cell = expand(&grid("")).remove(0);
        assert_eq!(cell.config.method_label, "receiver-only");
        assert_eq!(cell.id, "9a7a263ba998186c");
    }
}

#[cfg(test)]
mod default_grid_tests {
    use super::*;

    #[test]
    fn the_default_grid_expands_to_seven_cells() {
        let text = include_str!("../../grids/default.toml");
        let cells = expand(&Grid::from_toml(text).unwrap());
        let labels: Vec<&str> = cells
            .iter()
            .map(|c| c.config.method_label.as_str())
            .collect();
        assert_eq!(
            labels,
            [
                "receiver-only",
                "kv-fp16",
                "kv-int8",
                "kv-int4",
                "text-raw@256",
                "text-raw@1024",
                "c2c-fp16"
            ]
        );
        let c2c = cells.last().unwrap();
        assert_eq!(
            c2c.config.pair.fuser.as_deref(),
            Some("fuser/checkpoints/smollm2-from-qwen-coder-0.5b")
        );
        // The committed checkpoint the demo loads (paths are relative to the repository root).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(c2c.config.pair.fuser.as_deref().unwrap_or_default());
        assert!(dir.join("fuser.json").is_file() && dir.join("fuser.safetensors").is_file());
        assert!(cells.iter().all(|c| c.config.dataset.n == Some(30)
            && c.config.scoring == Scoring::Rank
            && c.config.rank_normalization == Some(RankNormalization::PerChar)
            && c.config.layout == Layout::Shared));
    }

    #[test]
    fn the_context_grid_sends_the_passage_in_the_context_layout() {
        use kvwire_proto::v1 as pb;

        use crate::wire::RequestTemplate;
        let text = include_str!("../../grids/context.toml");
        let cells = expand(&Grid::from_toml(text).unwrap());
        assert_eq!(cells.len(), 14);
        let sciq: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.config.dataset.name == "sciq_context")
            .collect();
        let labels: Vec<&str> = sciq
            .iter()
            .map(|c| c.config.method_label.as_str())
            .collect();
        assert_eq!(
            labels,
            [
                "receiver-only",
                "text-passage",
                "text-passage@256",
                "text-passage@1024",
                "kv-fp16",
                "kv-int8",
                "kv-int4"
            ]
        );
        assert!(cells.iter().all(|c| c.config.layout == Layout::Context));
        let example = pb::Example {
            id: "1".into(),
            question: "q".into(),
            choices: vec!["a".into(), "b".into()],
            gold: "A".into(),
            passage: "p".into(),
        };
        let context = RequestTemplate::of(&sciq[4].config).unwrap();
        let req = context.request(example.clone(), "http://s");
        assert_eq!(req.layout, pb::Layout::Context as i32);
        assert_eq!(req.example.unwrap().passage, "p");
        // The shared layout never sends a passage.
        let mut shared = sciq[4].config.clone();
        shared.layout = Layout::Shared;
        let req = RequestTemplate::of(&shared)
            .unwrap()
            .request(example, "http://s");
        assert_eq!(req.layout, pb::Layout::Unspecified as i32);
        assert!(req.example.unwrap().passage.is_empty());
        let capped = RequestTemplate::of(&sciq[2].config).unwrap();
        let text = capped.request(pb::Example::default(), "").text.unwrap();
        assert_eq!(
            (text.kind, text.byte_cap),
            (pb::MessageKind::Passage as i32, 256)
        );
    }

    #[test]
    fn the_context_c2c_grid_runs_c2c_its_control_and_the_baselines_on_the_same_items() {
        use kvwire_proto::v1 as pb;

        use crate::method::PassageSource;
        use crate::wire::RequestTemplate;
        let text = include_str!("../../grids/context-c2c.toml");
        let cells = expand(&Grid::from_toml(text).unwrap());
        let labels: Vec<&str> = cells
            .iter()
            .map(|c| c.config.method_label.as_str())
            .collect();
        assert_eq!(
            labels,
            [
                "receiver-only",
                "c2c-fp16",
                "c2c-int8",
                "c2c-fp16-random-passage",
                "c2c-int8-random-passage",
                "text-passage",
                "c2c-int4",
                "text-passage@256",
                "text-passage@1024"
            ]
        );
        // One slice for all: every item of SciQ-context within the fuser's slots.
        assert!(cells.iter().all(|c| c.config.layout == Layout::Context
            && c.config.dataset.name == "sciq_context"
            && c.config.dataset.n.is_none()
            && c.config.dataset.max_passage_tokens == Some(384)
            && c.config.pair.fuser.is_some()));
        // The control at both precisions of the wire: fp16 and int8.
        for control in [&cells[3].config, &cells[4].config] {
            assert_eq!(control.method.passage(), PassageSource::RandomOther);
            assert_eq!(control.seed, Some(0));
            let req = RequestTemplate::of(control)
                .unwrap()
                .request(pb::Example::default(), "");
            assert_eq!(req.method, pb::Method::C2c as i32);
            assert_eq!(req.layout, pb::Layout::Context as i32);
        }
        assert_ne!(cells[3].config.method, cells[4].config.method);
    }
}
