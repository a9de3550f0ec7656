//! Tests of `grid`.

use super::*;

const SMALL: &str = r#"
    name = "t"
    budgets = [256]
    [[pairs]]
    label = "a<-a"
    sharer = { model = "gguf:m" }
    receiver = { model = "gguf:m" }
    [[datasets]]
    name = "arc_easy"
    split = "test"
    n = 3
    [[methods]]
    kind = "receiver_only"
"#;

#[test]
fn parses_with_defaults() {
    let grid = Grid::from_toml(SMALL).unwrap();
    assert_eq!(grid.scoring, vec![Scoring::Letter]);
    assert_eq!(grid.seeds, vec![0]);
    assert!(!grid.pairs[0].sharer.is_random());
    assert_eq!(grid.limits.sample_timeout_s, 300);
    assert_eq!(grid.retry, RetryPolicy::default());
}

#[test]
fn retry_policy_is_read_and_checked() {
    let text = format!("{SMALL}\n[retry]\nattempts = 4\nbackoff_ms = 250\n");
    let grid = Grid::from_toml(&text).unwrap();
    assert_eq!((grid.retry.attempts, grid.retry.backoff_ms), (4, 250));
    let bad = format!("{SMALL}\n[retry]\nattempts = 0\n");
    assert!(matches!(Grid::from_toml(&bad), Err(GridError::Invalid(_))));
}

#[test]
fn reports_every_problem_together() {
    let text = SMALL
        .replace("name = \"t\"", "name = \"bad name\"")
        .replace("n = 3", "n = 0\nshard = { index = 2, count = 2 }")
        .replace("budgets = [256]", "budgets = [0]");
    let Err(GridError::Invalid(problems)) = Grid::from_toml(&text) else {
        panic!("expected validation problems");
    };
    assert_eq!(problems.len(), 4, "{problems:?}");
}

#[test]
fn the_context_layout_is_checked_with_its_methods_and_datasets() {
    let context = SMALL
        .replace(
            "name = \"t\"",
            "name = \"t\"\nlayout = \"context\"\nscoring = [\"rank\"]",
        )
        .replace(
            "name = \"arc_easy\"",
            "name = \"passkey\"\npassage_words = 50",
        );
    let text = format!(
        "{context}\n[[methods]]\nkind = \"text\"\nmode = \"passage\"\n\
         [[methods]]\nkind = \"text\"\nmode = \"passage_extract\"\n"
    );
    let grid = Grid::from_toml(&text).unwrap();
    assert_eq!(grid.layout, Layout::Context);
    assert_eq!(grid.datasets[0].passage_words, Some(50));
    // Letter scoring and other text modes are refused in the context layout; the passage mode
    // and the random-passage control outside it; passage_words outside passkey. C2C and its
    // control are the context layout's.
    let c2c = "[[methods]]\nkind = \"c2c\"\nprecision = \"fp16\"\n\
               [[methods]]\nkind = \"c2c\"\nprecision = \"int4\"\npassage = \"random_other\"\n";
    let grid = Grid::from_toml(&format!("{context}\n{c2c}")).unwrap();
    let labels: Vec<String> = grid.methods.iter().map(|m| m.label()).collect();
    assert_eq!(labels[1..], ["c2c-fp16", "c2c-int4-random-passage"]);
    assert!(grid.methods[2].uses_seed() && !grid.methods[1].uses_seed());
    let bad = format!(
        "{}\n[[methods]]\nkind = \"text\"\nmode = \"raw\"\n",
        context.replace("scoring = [\"rank\"]", "scoring = [\"letter\"]")
    );
    let Err(GridError::Invalid(problems)) = Grid::from_toml(&bad) else {
        panic!("expected problems");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    let Err(GridError::Invalid(problems)) = Grid::from_toml(&format!("{SMALL}\n{c2c}")) else {
        panic!("expected problems");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("random_other"), "{problems:?}");
    // A passage limit belongs to the context layout and is at least one token.
    let limited = |text: &str, max: usize| {
        text.replace("n = 3", &format!("n = 3\nmax_passage_tokens = {max}"))
    };
    assert!(Grid::from_toml(&limited(&context, 384)).is_ok());
    assert!(Grid::from_toml(&limited(&context, 0)).is_err());
    assert!(Grid::from_toml(&limited(SMALL, 384)).is_err());
    for mode in ["passage", "passage_extract"] {
        let shared = format!("{SMALL}\n[[methods]]\nkind = \"text\"\nmode = \"{mode}\"\n");
        assert!(Grid::from_toml(&shared).is_err(), "{mode}");
    }
    let words = SMALL.replace("n = 3", "n = 3\npassage_words = 9");
    assert!(Grid::from_toml(&words).is_err());
    // The default layout is left out of the resolved grid.
    let json = serde_json::to_value(Grid::from_toml(SMALL).unwrap()).unwrap();
    assert!(json.get("layout").is_none());
}

#[test]
fn the_long_variant_needs_a_known_context_length() {
    let context = SMALL.replace(
        "name = \"t\"",
        "name = \"t\"\nlayout = \"context\"\nscoring = [\"rank\"]",
    );
    let long = |extra: &str| {
        context.replace(
            "name = \"arc_easy\"",
            &format!("name = \"sciq_context_long\"{extra}"),
        )
    };
    let grid = Grid::from_toml(&long("\ncontext_tokens = 2048")).unwrap();
    assert_eq!(grid.datasets[0].context_tokens, Some(2048));
    for (extra, says) in [
        ("", "give its context_tokens"),
        ("\ncontext_tokens = 0", "context_tokens = 0"),
        (
            "\ncontext_tokens = 3000",
            "3000 is not a long-context target",
        ),
    ] {
        let Err(GridError::Invalid(problems)) = Grid::from_toml(&long(extra)) else {
            panic!("{extra:?} should be refused");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains(says), "{problems:?}");
        assert!(problems[0].contains("1024, 2048, 8192"), "{problems:?}");
    }
    // Outside the context layout, and on another dataset, it is refused too.
    let shared = long("\ncontext_tokens = 1024").replace("layout = \"context\"", "");
    assert!(Grid::from_toml(&shared).is_err());
    for key in ["context_tokens = 1024", "corpus_file = \"c.jsonl\""] {
        let other = SMALL.replace("n = 3", &format!("n = 3\n{key}"));
        let Err(GridError::Invalid(problems)) = Grid::from_toml(&other) else {
            panic!("{key} on arc_easy should be refused");
        };
        assert!(problems[0].contains("applies to"), "{problems:?}");
    }
}

#[test]
fn unknown_fields_are_rejected() {
    let text = SMALL.replace("split = \"test\"", "split = \"test\"\nsplitt = 1");
    assert!(matches!(Grid::from_toml(&text), Err(GridError::Parse(_))));
}

#[test]
fn pair_method_filter_must_name_a_method() {
    let text = SMALL.replace(
        "receiver = { model = \"gguf:m\" }",
        "receiver = { model = \"gguf:m\" }\nmethods = [\"nope\"]",
    );
    let Err(GridError::Invalid(problems)) = Grid::from_toml(&text) else {
        panic!("expected a problem");
    };
    assert!(problems[0].contains("nope"));
}
