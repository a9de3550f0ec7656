//! End-to-end: a sharer's refusal keeps its label through the receiver and into the
//! coordinator's rows. A KV cell capped at a few bytes is refused by the sharer
//! (FAILED_PRECONDITION, `cap_too_small`); the receiver passes the code and the label on
//! (docs/STATUS_CODES.md), and the row records `error_type = "cap_too_small"`.

use std::collections::BTreeMap;
use std::sync::Arc;

use coordinator::cell::expand;
use coordinator::grid::Grid;
use coordinator::registry::{CellPlan, RunDir};
use coordinator::row::RowStatus;
use coordinator::runner::{ReadyCell, RunOptions, receiver_channel, run};
use coordinator::wire::RequestTemplate;
use e2e_tests::{TINY_MODEL, example, start_receiver, start_sharer};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use service_kit::rpc::ERROR_TYPE_KEY;
use tonic::Code;

/// A byte cap far below one position's transfer (a session header alone is larger).
const TINY_CAP: u64 = 16;

fn grid() -> Grid {
    let text = format!(
        r#"
        name = "capped-too-small"
        budgets = [{TINY_CAP}]
        [[pairs]]
        label = "tiny<-tiny"
        sharer = {{ model = "{TINY_MODEL}" }}
        receiver = {{ model = "{TINY_MODEL}" }}
        [[datasets]]
        name = "arc_easy"
        split = "test"
        [[methods]]
        kind = "kv"
        precision = "fp16"
        [limits]
        sample_timeout_s = 60
        [retry]
        attempts = 1
        "#
    );
    Grid::from_toml(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharer_refusal_keeps_its_label_through_the_receiver_into_the_row() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;

    // The receiver's own answer: the sharer's code and label, the sharer named in the message.
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let status = client
        .evaluate(pb::EvaluateRequest {
            example: Some(example("e0")),
            method: pb::Method::Kv as i32,
            transfer: Some(pb::TransferSettings {
                byte_cap: TINY_CAP,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.metadata().get(ERROR_TYPE_KEY).unwrap(),
        "cap_too_small",
        "{status:?}"
    );
    assert!(
        status.message().starts_with("sharer returned"),
        "{status:?}"
    );

    // Through the coordinator: the row records the sharer's label.
    let grid = grid();
    let cell = expand(&grid).remove(0);
    let examples: BTreeMap<String, pb::Example> = [("e1".to_string(), example("e1"))].into();
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path().join("run")).unwrap();
    let ready = ReadyCell {
        plan: CellPlan {
            cell: cell.clone(),
            sample_ids: examples.keys().cloned().collect(),
        },
        template: RequestTemplate::of(&cell.config).unwrap(),
        examples: Arc::new(examples),
        receiver: receiver_channel(&receiver.endpoint(), &Default::default()).unwrap(),
        sharer_endpoint: sharer.endpoint(),
    };
    let options = RunOptions {
        concurrency: 1,
        progress: false,
        retry: grid.retry,
    };
    run(&dir, vec![ready], options).await.unwrap();
    let rows = dir.read_rows(&cell.id).unwrap().rows;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].status, RowStatus::Failed, "{rows:#?}");
    let e = rows[0].error.as_ref().unwrap();
    assert_eq!(e.kind, "FailedPrecondition", "{e:?}");
    assert_eq!(e.error_type.as_deref(), Some("cap_too_small"), "{e:?}");
}
