//! grids/context-selection.toml gained the precision plans after its first CPU and GPU runs;
//! those run folders are resumed with it. The grid stays valid, its new methods reach the
//! request as precision plans, and the cells it had keep the ids those runs recorded (so a
//! resumed run skips them and runs only the new cells).

use std::path::Path;

use coordinator::cell::expand;
use coordinator::grid::Grid;
use coordinator::wire::RequestTemplate;
use kvwire_proto::v1 as pb;

fn grid() -> Grid {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grids/context-selection.toml");
    let text = std::fs::read_to_string(&path).expect("the grid file");
    Grid::from_toml(&text).expect("a valid grid")
}

#[test]
fn earlier_cells_keep_their_ids() {
    let cells = expand(&grid());
    let id = |label: &str, cap: Option<u64>| {
        cells
            .iter()
            .find(|c| c.config.method_label == label && c.config.budget_cap_bytes == cap)
            .map(|c| c.id.as_str())
    };
    // Recorded in configs/cells.json of the n = 30 CPU run of this grid (commit 63475ef).
    assert_eq!(id("receiver-only", None), Some("8e310beeddf2c8cd"));
    assert_eq!(id("kv-int4", Some(16384)), Some("fd91970cc322b600"));
    assert_eq!(id("kv-int4", None), Some("7fa976c6aae4c194"));
    assert_eq!(id("kv-fp16", Some(65536)), Some("814a671ce477fe6c"));
    assert_eq!(
        id("kv-int4-query_attention1", Some(262144)),
        Some("0bd8e172fed3b0aa")
    );
}

#[test]
fn the_precision_plans_reach_the_request() {
    let cells = expand(&grid());
    let plan_of = |label: &str| {
        let cell = cells
            .iter()
            .find(|c| c.config.method_label == label)
            .unwrap_or_else(|| panic!("no method {label}"));
        let t = RequestTemplate::of(&cell.config)
            .unwrap()
            .request(pb::Example::default(), "")
            .transfer
            .unwrap();
        (t.precision_plan, t.fp16_layers, t.payload)
    };
    use pb::PrecisionPlan as P;
    let int8 = pb::Payload::Int8 as i32;
    assert_eq!(
        plan_of("kv-int8-fp16last6"),
        (P::MixedLayers as i32, 6, int8)
    );
    assert_eq!(
        plan_of("kv-int4int8-by-layer"),
        (P::LayerSensitivity as i32, 0, int8)
    );
    assert_eq!(plan_of("kv-rd-int4int8"), (P::TokenRate as i32, 0, int8));
    assert_eq!(
        plan_of("kv-rd-int4int8-query_attention1"),
        (P::TokenRate as i32, 0, int8)
    );
    assert_eq!(plan_of("kv-rd-int8"), (P::TokenTopK as i32, 0, int8));
    assert_eq!(
        plan_of("kv-rd-int8-query_attention1"),
        (P::TokenTopK as i32, 0, int8)
    );
    assert_eq!(
        plan_of("kv-int4"),
        (P::Unspecified as i32, 0, pb::Payload::Int4 as i32)
    );
}
