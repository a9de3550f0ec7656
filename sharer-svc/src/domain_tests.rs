//! Tests of `domain`.

use super::*;

#[test]
fn transfer_defaults_and_rejections() {
    let plan = TransferPlan::try_from(None).unwrap();
    assert_eq!(
        (plan.payload, plan.selection, plan.byte_cap),
        (Payload::Int8, Selection::ALL, 0)
    );
    let random = pb::TransferSettings {
        selection: pb::Selection::Random as i32,
        keep_fraction: 0.5,
        seed: 7,
        ..Default::default()
    };
    assert_eq!(
        TransferPlan::try_from(Some(random)).unwrap().selection,
        Selection {
            policy: PolicySpec::Random { seed: 7 },
            keep_fraction: 0.5
        }
    );
    let bad = pb::TransferSettings {
        keep_fraction: 1.5,
        ..Default::default()
    };
    assert!(TransferPlan::try_from(Some(bad)).is_err());
    let bad = pb::TransferSettings {
        payload: 99,
        ..Default::default()
    };
    assert!(TransferPlan::try_from(Some(bad)).is_err());
}

#[test]
fn precision_plans_convert_and_bad_combinations_are_refused() {
    let plan = |precision_plan: pb::PrecisionPlan, fp16_layers: u32, payload: pb::Payload| {
        let t = pb::TransferSettings {
            precision_plan: precision_plan as i32,
            fp16_layers,
            payload: payload as i32,
            ..Default::default()
        };
        TransferPlan::try_from(Some(t)).map(|p| p.precision)
    };
    use pb::Payload as P;
    use pb::PrecisionPlan as W;
    assert_eq!(
        plan(W::Unspecified, 0, P::Int4).unwrap(),
        PrecisionPlan::Uniform
    );
    assert_eq!(
        plan(W::MixedLayers, 3, P::Int8).unwrap(),
        PrecisionPlan::MixedLayers { fp16_layers: 3 }
    );
    assert_eq!(
        plan(W::TokenTopK, 0, P::Unspecified).unwrap(),
        PrecisionPlan::TokenRate { int4: false }
    );
    assert_eq!(
        plan(W::LayerSensitivity, 0, P::Int8).unwrap(),
        PrecisionPlan::LayerSensitivity
    );
    let invalid = |r: Result<PrecisionPlan, SharerError>| {
        matches!(r, Err(SharerError::InvalidArgument { .. }))
    };
    assert!(invalid(plan(W::MixedLayers, 0, P::Int8)));
    assert!(invalid(plan(W::Uniform, 2, P::Int8)));
    assert!(invalid(plan(W::TokenRate, 0, P::Fp16)));
    let per_head = pb::TransferSettings {
        precision_plan: W::TokenRate as i32,
        granularity: pb::Granularity::PerHead as i32,
        ..Default::default()
    };
    assert!(invalid(
        TransferPlan::try_from(Some(per_head)).map(|p| p.precision)
    ));
    let unknown = pb::TransferSettings {
        precision_plan: 99,
        ..Default::default()
    };
    assert!(invalid(
        TransferPlan::try_from(Some(unknown)).map(|p| p.precision)
    ));
}

#[test]
fn share_requests_keep_all_positions_and_examples_their_passage() {
    let example = pb::Example {
        id: "1".into(),
        question: "q".into(),
        choices: vec!["a".into(), "b".into()],
        gold: "A".into(),
        passage: "Bees make honey.".into(),
    };
    let r = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Text(
            "Bees make honey.\n\n".into(),
        )),
        all_positions: true,
        ..Default::default()
    };
    assert!(ShareParams::try_from(r.clone()).unwrap().all_positions);
    // Query-aware selection needs the query.
    let mut aware = r;
    aware.transfer = Some(pb::TransferSettings {
        selection: pb::Selection::QueryAttention as i32,
        ..Default::default()
    });
    assert!(ShareParams::try_from(aware.clone()).is_err());
    aware.query = "Question: what do bees make?\nAnswer:".into();
    assert!(ShareParams::try_from(aware).unwrap().query.is_some());
    let e = example_from_wire(Some(example.clone())).unwrap();
    assert_eq!(e.passage.as_deref(), Some("Bees make honey."));
    let none = example_from_wire(Some(pb::Example {
        passage: String::new(),
        ..example
    }))
    .unwrap();
    assert_eq!(none.passage, None);
    assert_eq!(
        message_kind_from_wire(pb::MessageKind::Passage as i32).unwrap(),
        MessageKind::Passage
    );
}

#[test]
fn session_ids_round_trip_and_reject_garbage() {
    let id = [7u8; 16];
    assert_eq!(session_id_from_hex(&session_id_to_hex(&id)).unwrap(), id);
    assert!(session_id_from_hex("xyz").is_err());
    assert!(session_id_from_hex("0f").is_err());
}
