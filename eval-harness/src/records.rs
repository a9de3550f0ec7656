//! Hugging Face style records (one JSON object per item, as in the datasets' JSONL, Arrow or
//! Parquet exports) converted to [`Example`]. The layout is recognised from the keys: ARC /
//! OpenBookQA / CommonsenseQA (`choices: {text, label}`, `answerKey`), MMLU (`choices: [..]`,
//! `answer`), gsm8k (`answer` with `#### N`), SciQ (`correct_answer`, `distractor1..3`), PIQA
//! (`goal`, `sol1`, `sol2`), Social IQa (`answerA..C`), and this crate's own [`Example`] rows.

use serde_json::{Map, Value};

use crate::example::{Example, letter_labels};
use crate::sample::fnv1a;

/// Why a record could not be converted; the caller adds file and record number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordError {
    Field { field: &'static str, reason: String },
    UnknownLayout { keys: String },
}

type Obj = Map<String, Value>;

pub(crate) fn str_field<'a>(obj: &'a Obj, field: &'static str) -> Result<&'a str, RecordError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(RecordError::Field {
            field,
            reason: format!("expected a string, got {other}"),
        }),
        None => Err(RecordError::Field {
            field,
            reason: "missing".to_owned(),
        }),
    }
}

pub(crate) fn str_list(obj: &Obj, field: &'static str) -> Result<Vec<String>, RecordError> {
    let bad = |reason: String| RecordError::Field { field, reason };
    let items = obj
        .get(field)
        .and_then(Value::as_array)
        .ok_or_else(|| bad("expected a list of strings".to_owned()))?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("non-string item {v}")))
        })
        .collect()
}

fn usize_field(obj: &Obj, field: &'static str) -> Result<usize, RecordError> {
    let bad = |reason: String| RecordError::Field { field, reason };
    match obj.get(field) {
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| bad(format!("not a non-negative integer: {n}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| bad(format!("not an integer: {s:?}"))),
        Some(other) => Err(bad(format!("expected an integer, got {other}"))),
        None => Err(bad("missing".to_owned())),
    }
}

/// The record's id: `id`, else `index`/`idx`, else the record number.
pub(crate) fn record_id(obj: &Obj, record: usize) -> String {
    for key in ["id", "index", "idx"] {
        match obj.get(key) {
            Some(Value::String(s)) => return s.clone(),
            Some(Value::Number(n)) => return n.to_string(),
            _ => {}
        }
    }
    record.to_string()
}

/// The final answer of a gsm8k solution: the text after the last `####`, without commas.
pub fn gsm8k_final_answer(solution: &str) -> Option<String> {
    let (_, tail) = solution.rsplit_once("####")?;
    let answer = tail.trim().replace(',', "");
    (!answer.is_empty()).then_some(answer)
}

fn multiple_choice(
    id: String,
    dataset: &str,
    question: &str,
    choices: Vec<String>,
    gold: Option<usize>,
) -> Example {
    let gold = gold.filter(|&g| g < choices.len());
    Example {
        id,
        dataset: dataset.to_owned(),
        question: question.trim().to_owned(),
        labels: letter_labels(choices.len()),
        choices,
        gold,
        answer_text: None,
        passage: None,
    }
}

/// Converts one record; `dataset` names the dataset/split the caller is loading.
pub(crate) fn example_from_record(
    dataset: &str,
    value: &Value,
    record: usize,
) -> Result<Example, RecordError> {
    let Some(obj) = value.as_object() else {
        return Err(RecordError::UnknownLayout {
            keys: format!("not an object: {value}"),
        });
    };
    let id = record_id(obj, record);
    let has = |k: &str| obj.contains_key(k);

    if let Some(Value::Object(choices)) = obj.get("choices") {
        // ARC, OpenBookQA, CommonsenseQA: labels may be letters or digits ("1".."4"); the
        // choice position decides the letter shown, the answer key picks the position.
        let text = str_list(choices, "text")?;
        let labels = str_list(choices, "label")?;
        if labels.len() != text.len() {
            let reason = format!("{} labels for {} texts", labels.len(), text.len());
            return Err(RecordError::Field {
                field: "choices",
                reason,
            });
        }
        let key = str_field(obj, "answerKey")?.trim();
        let gold = labels.iter().position(|l| l.trim() == key);
        let question = str_field(obj, "question").or_else(|_| str_field(obj, "question_stem"))?;
        return Ok(multiple_choice(id, dataset, question, text, gold));
    }
    if has("choices") && has("labels") && has("question") {
        // This crate's own Example rows.
        let choices = str_list(obj, "choices")?;
        let gold = obj.get("gold").and_then(Value::as_u64).map(|g| g as usize);
        let answer_text = obj
            .get("answer_text")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut ex = multiple_choice(id, dataset, str_field(obj, "question")?, choices, gold);
        ex.answer_text = answer_text;
        if let Some(passage) = obj.get("passage").and_then(Value::as_str) {
            ex = ex.with_passage(passage);
        }
        return Ok(ex);
    }
    if has("choices") && has("answer") {
        // MMLU: answer is a class index or a letter.
        let choices = str_list(obj, "choices")?;
        let gold = match obj.get("answer") {
            Some(Value::String(s)) if s.len() == 1 && s.as_bytes()[0].is_ascii_uppercase() => {
                Some(usize::from(s.as_bytes()[0] - b'A'))
            }
            _ => Some(usize_field(obj, "answer")?),
        };
        return Ok(multiple_choice(
            id,
            dataset,
            str_field(obj, "question")?,
            choices,
            gold,
        ));
    }
    if has("question") && has("answer") {
        let question = str_field(obj, "question")?;
        let answer =
            gsm8k_final_answer(str_field(obj, "answer")?).ok_or_else(|| RecordError::Field {
                field: "answer",
                reason: "no `#### N` final answer".to_owned(),
            })?;
        return Ok(Example {
            id,
            dataset: dataset.to_owned(),
            question: question.trim().to_owned(),
            choices: Vec::new(),
            labels: Vec::new(),
            gold: None,
            answer_text: Some(answer),
            passage: None,
        });
    }
    if has("correct_answer") && has("distractor1") {
        let question = str_field(obj, "question")?;
        let mut choices = vec![
            str_field(obj, "distractor1")?.to_owned(),
            str_field(obj, "distractor2")?.to_owned(),
            str_field(obj, "distractor3")?.to_owned(),
            str_field(obj, "correct_answer")?.to_owned(),
        ];
        // The raw layout always lists the correct answer last; place it by a hash of the
        // question so the order is fixed per item but the gold letter is not constant.
        let gold = (fnv1a(question.as_bytes()) % 4) as usize;
        choices.swap(gold, 3);
        return Ok(multiple_choice(id, dataset, question, choices, Some(gold)));
    }
    if has("goal") && has("sol1") {
        let choices = vec![
            str_field(obj, "sol1")?.to_owned(),
            str_field(obj, "sol2")?.to_owned(),
        ];
        let gold = usize_field(obj, "label")?;
        return Ok(multiple_choice(
            id,
            dataset,
            str_field(obj, "goal")?,
            choices,
            Some(gold),
        ));
    }
    if has("answerA") && has("context") {
        let question = format!(
            "{} {}",
            str_field(obj, "context")?.trim(),
            str_field(obj, "question")?.trim()
        );
        let choices = vec![
            str_field(obj, "answerA")?.to_owned(),
            str_field(obj, "answerB")?.to_owned(),
            str_field(obj, "answerC")?.to_owned(),
        ];
        // Social IQa labels are 1-based strings.
        let gold = usize_field(obj, "label")?.checked_sub(1);
        return Ok(multiple_choice(id, dataset, &question, choices, gold));
    }
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    Err(RecordError::UnknownLayout {
        keys: keys.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arc_numbered_labels_map_to_letters_by_position() {
        let rec = json!({"id": "NYSEDREGENTS_2015_4_1", "question": "Which?", "answerKey": "3",
            "choices": {"text": ["w", "x", "y", "z"], "label": ["1", "2", "3", "4"]}});
        let ex = example_from_record("arc_challenge/test", &rec, 0).unwrap();
        assert_eq!(
            (ex.labels.join(""), ex.gold, ex.id.as_str()),
            ("ABCD".to_owned(), Some(2), "NYSEDREGENTS_2015_4_1")
        );
        let rec = json!({"id": "x", "question_stem": "Q", "answerKey": "E",
            "choices": {"text": ["a", "b"], "label": ["A", "B"]}});
        assert_eq!(
            example_from_record("openbookqa/test", &rec, 3)
                .unwrap()
                .gold,
            None
        );
    }

    #[test]
    fn mmlu_gsm8k_piqa_siqa_and_sciq_layouts() {
        let mmlu = json!({"question": "2+2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1});
        assert_eq!(
            example_from_record("mmlu/dev", &mmlu, 7).unwrap().gold,
            Some(1)
        );
        let gsm = json!({"question": "How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 1,234"});
        let ex = example_from_record("gsm8k/test", &gsm, 0).unwrap();
        assert_eq!(
            (ex.answer_text.as_deref(), ex.choices.len()),
            (Some("1234"), 0)
        );
        let piqa = json!({"goal": "Dry a phone", "sol1": "rice", "sol2": "oven", "label": 0});
        assert_eq!(
            example_from_record("piqa/validation", &piqa, 0)
                .unwrap()
                .labels,
            ["A", "B"]
        );
        let siqa = json!({"context": "C.", "question": "Q?", "answerA": "a", "answerB": "b", "answerC": "c", "label": "3"});
        let ex = example_from_record("socialiqa/validation", &siqa, 0).unwrap();
        assert_eq!((ex.question.as_str(), ex.gold), ("C. Q?", Some(2)));
        let sciq = json!({"question": "Who?", "distractor1": "a", "distractor2": "b", "distractor3": "c", "correct_answer": "darwin"});
        let ex = example_from_record("sciq/validation", &sciq, 0).unwrap();
        assert_eq!(ex.choices[ex.gold.unwrap()], "darwin");
        let unknown = json!({"foo": 1});
        assert!(matches!(
            example_from_record("x", &unknown, 0),
            Err(RecordError::UnknownLayout { .. })
        ));
        let bad = json!({"question": "Q", "choices": ["a", 3], "answer": 0});
        assert!(matches!(
            example_from_record("x", &bad, 0),
            Err(RecordError::Field {
                field: "choices",
                ..
            })
        ));
    }

    #[test]
    fn example_rows_round_trip() {
        let ex = Example {
            id: "q1".into(),
            dataset: "arc_easy/test".into(),
            question: "Q?".into(),
            choices: vec!["a".into(), "b".into()],
            labels: letter_labels(2),
            gold: Some(1),
            answer_text: None,
            passage: None,
        };
        let value = serde_json::to_value(&ex).unwrap();
        assert_eq!(example_from_record("arc_easy/test", &value, 0).unwrap(), ex);
    }
}
