//! Tests of `domain`.

use super::*;

fn request() -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        example: Some(pb::Example {
            id: "1".into(),
            question: "q".into(),
            choices: vec!["a".into(), "b".into()],
            gold: "B".into(),
            passage: String::new(),
        }),
        method: pb::Method::Kv as i32,
        ..Default::default()
    }
}

#[test]
fn converts_a_kv_request_and_rejects_unset_methods() {
    let p = EvaluateParams::try_from(request()).unwrap();
    assert_eq!(
        (p.method, p.scoring, p.example.gold),
        (Method::Kv, Scoring::Letter, Some(1))
    );
    assert!(p.refine.is_none() && p.sharer_endpoint.is_none());
    let mut r = request();
    r.method = 0;
    assert!(EvaluateParams::try_from(r).is_err());
    let mut r = request();
    r.refine = Some(pb::RefineSettings {
        margin_threshold: 2.0,
        upgrade_payload: 1,
        ..Default::default()
    });
    assert!(EvaluateParams::try_from(r).is_err());
}

#[test]
fn rank_scoring_defaults_to_per_char_and_takes_unbounded_margins() {
    let mut r = request();
    r.scoring = pb::Scoring::Rank as i32;
    r.refine = Some(pb::RefineSettings {
        margin_threshold: 2.0,
        upgrade_payload: 1,
        ..Default::default()
    });
    let p = EvaluateParams::try_from(r.clone()).unwrap();
    assert_eq!(p.scoring, Scoring::Rank(Normalization::PerChar));
    assert!(p.refine.is_some());
    r.rank_normalization = pb::RankNormalization::Raw as i32;
    let p = EvaluateParams::try_from(r.clone()).unwrap();
    assert_eq!(p.scoring, Scoring::Rank(Normalization::Raw));
    r.rank_normalization = 9;
    assert!(EvaluateParams::try_from(r).is_err());
}

#[test]
fn the_context_layout_needs_a_passage_and_rank_scoring_and_takes_kv_and_c2c() {
    use service_kit::rpc::ServiceError;
    let context = |method: pb::Method, scoring: pb::Scoring, passage: &str| {
        let mut r = request();
        r.method = method as i32;
        r.scoring = scoring as i32;
        r.layout = pb::Layout::Context as i32;
        if let Some(e) = r.example.as_mut() {
            e.passage = passage.into();
        }
        EvaluateParams::try_from(r)
    };
    let code = |r: Result<EvaluateParams, ReceiverError>| r.unwrap_err().code();
    let p = context(pb::Method::Kv, pb::Scoring::Rank, "Bees make honey.").unwrap();
    assert_eq!(p.layout, PromptLayout::Context);
    assert_eq!(p.passage.as_deref(), Some("Bees make honey."));
    assert_eq!(
        code(context(pb::Method::Kv, pb::Scoring::Rank, " ")),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(context(pb::Method::Kv, pb::Scoring::Letter, "x")),
        tonic::Code::InvalidArgument
    );
    // C2C in the context layout is the fuser's to serve or refuse (by its checkpoint).
    let c2c = context(pb::Method::C2c, pb::Scoring::Rank, "Bees make honey.").unwrap();
    assert_eq!(
        (c2c.method, c2c.layout),
        (Method::C2c, PromptLayout::Context)
    );
    assert_eq!(
        code(context(pb::Method::C2c, pb::Scoring::Letter, "x")),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(context(pb::Method::C2c, pb::Scoring::Rank, "")),
        tonic::Code::InvalidArgument
    );
    let mut text = request();
    text.method = pb::Method::Text as i32;
    text.scoring = pb::Scoring::Rank as i32;
    text.text = Some(pb::TextSettings {
        kind: pb::MessageKind::Passage as i32,
        byte_cap: 0,
    });
    // The passage kind needs the context layout; the context layout needs that kind.
    assert!(EvaluateParams::try_from(text.clone()).is_err());
    text.layout = pb::Layout::Context as i32;
    text.example.as_mut().unwrap().passage = "x".into();
    assert!(EvaluateParams::try_from(text.clone()).is_ok());
    text.text = Some(pb::TextSettings {
        kind: pb::MessageKind::Raw as i32,
        byte_cap: 0,
    });
    assert!(EvaluateParams::try_from(text).is_err());
    // The default layout is the shared prompt, and takes any passage without a look.
    let p = EvaluateParams::try_from(request()).unwrap();
    assert_eq!(p.layout, PromptLayout::Shared);
}
