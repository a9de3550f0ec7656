//! Method labels, settings checks and serialization.

use super::*;

fn parse(text: &str) -> MethodSpec {
    toml::from_str(text).unwrap()
}

#[test]
fn labels_are_derived_from_settings() {
    assert_eq!(parse("kind = \"receiver_only\"").label(), "receiver-only");
    assert_eq!(
        parse("kind = \"text\"\nmode = \"raw\"\ncap_bytes = 256").label(),
        "text-raw@256"
    );
    assert_eq!(
        parse("kind = \"kv\"\nprecision = \"int8\"").label(),
        "kv-int8"
    );
    let m = parse(
        "kind = \"c2c\"\nprecision = \"int4\"\ngranularity = \"per_head\"\nselection = \"back\"\nkeep = 0.25",
    );
    assert_eq!(m.label(), "c2c-int4-per_head-back0.25");
    assert_eq!(
        parse("kind = \"kv\"\nprecision = \"fp16\"\nlabel = \"x\"").label(),
        "x"
    );
}

#[test]
fn precision_plans_label_and_check_their_settings() {
    let kv = |rest: &str| parse(&format!("kind = \"kv\"\nprecision = \"int8\"\n{rest}"));
    let mixed = kv("plan = \"mixed_layers\"\nfp16_layers = 6");
    assert_eq!(mixed.label(), "kv-int8-fp16last6");
    assert!(mixed.problems().is_empty());
    let rd = kv("plan = \"rate\"\nselection = \"query_attention\"\nkeep = 1.0");
    assert_eq!(rd.label(), "kv-rd-int4int8-query_attention1");
    assert_eq!(kv("plan = \"top_k\"").label(), "kv-rd-int8");
    assert_eq!(
        kv("plan = \"layer_sensitivity\"").label(),
        "kv-int4int8-by-layer"
    );
    assert_eq!(kv("plan = \"mixed_layers\"").problems().len(), 1);
    assert_eq!(kv("fp16_layers = 2").problems().len(), 1);
    let int4_rd = parse("kind = \"kv\"\nprecision = \"int4\"\nplan = \"rate\"");
    assert_eq!(int4_rd.problems().len(), 1);
    assert_eq!(
        kv("plan = \"top_k\"\ngranularity = \"per_head\"")
            .problems()
            .len(),
        1
    );
}

#[test]
fn methods_without_a_plan_serialize_as_before() {
    // Cell ids hash these settings: a method without a plan keeps its id.
    let m = parse("kind = \"kv\"\nprecision = \"int4\"\nselection = \"front\"\nkeep = 1.0");
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"kind":"kv","precision":"int4","granularity":"per_block","selection":"front","keep":1.0}"#
    );
    let rd = parse("kind = \"kv\"\nprecision = \"int8\"\nplan = \"rate\"");
    assert!(
        serde_json::to_string(&rd)
            .unwrap()
            .contains(r#""plan":"rate""#)
    );
}

#[test]
fn unknown_settings_are_rejected() {
    let r: Result<MethodSpec, _> =
        toml::from_str("kind = \"kv\"\nprecision = \"int8\"\nprecison = 1");
    assert!(r.is_err());
}

#[test]
fn axes_apply_only_where_they_change_the_outcome() {
    let ro = parse("kind = \"receiver_only\"");
    assert!(!ro.uses_budget_axis() && !ro.uses_seed());
    let capped = parse("kind = \"text\"\nmode = \"hint\"\ncap_bytes = 64");
    assert!(!capped.uses_budget_axis());
    assert_eq!(capped.own_cap(), Some(64));
    let random = parse("kind = \"kv\"\nprecision = \"int8\"\nselection = \"random\"\nkeep = 0.5");
    assert!(random.uses_budget_axis() && random.uses_seed());
}

#[test]
fn selection_needs_a_keep_fraction() {
    assert_eq!(
        parse("kind = \"kv\"\nprecision = \"int8\"\nselection = \"front\"")
            .problems()
            .len(),
        1
    );
    assert_eq!(
        parse("kind = \"kv\"\nprecision = \"int8\"\nselection = \"front\"\nkeep = 1.5")
            .problems()
            .len(),
        1
    );
    assert!(
        parse("kind = \"kv\"\nprecision = \"int8\"\nselection = \"front\"\nkeep = 0.5")
            .problems()
            .is_empty()
    );
}

#[test]
fn refinement_labels_and_checks_its_settings() {
    let kv = "kind = \"kv\"\nprecision = \"int4\"\nselection = \"query_attention\"\nkeep = 1.0\n";
    let m = parse(&format!(
        "{kv}refine = {{ margin_threshold = 0.05, mode = \"indices\", reserve = 0.25 }}"
    ));
    assert_eq!(
        m.label(),
        "kv-int4-query_attention1-r2indices-res0.25-t0.05"
    );
    assert!(m.problems().is_empty(), "{:?}", m.problems());
    let m = parse(&format!(
        "{kv}refine = {{ margin_threshold = 3.0, mode = \"upgrade\", upgrade = \"int4\", max_positions = 8 }}"
    ));
    assert_eq!(m.label(), "kv-int4-query_attention1-r2upgrade-int4-max8-t3");
    // Rank margins are score gaps: thresholds above 1 are fine.
    assert!(m.problems().is_empty(), "{:?}", m.problems());
    for (bad, says) in [
        (
            "margin_threshold = -1.0, mode = \"upgrade\"",
            "margin_threshold",
        ),
        (
            "margin_threshold = 0.1, mode = \"upgrade\", reserve = 1.0",
            "reserve",
        ),
        (
            "margin_threshold = 0.1, mode = \"indices\", upgrade = \"int4\"",
            "upgrade",
        ),
    ] {
        let problems = parse(&format!("{kv}refine = {{ {bad} }}")).problems();
        assert!(
            problems.iter().any(|p| p.contains(says)),
            "{bad}: {problems:?}"
        );
    }
}
