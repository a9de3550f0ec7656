//! End-to-end: a sharer's refusal keeps its label through the receiver and into the
//! coordinator's rows. A KV cell capped at a few bytes is refused by the sharer
//! (FAILED_PRECONDITION, `cap_too_small`); the receiver passes the code and the label on
//! (docs/STATUS_CODES.md), and the row records `error_type = "cap_too_small"`.

use coordinator::registry::RunDir;
use coordinator::row::RowStatus;
use coordinator::runner::run;
use e2e_tests::one_cell::{ready_cell, run_options, tiny_kv_grid};
use e2e_tests::{TINY_MODEL, example, start_receiver, start_sharer};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use service_kit::rpc::ERROR_TYPE_KEY;
use tonic::Code;

/// A byte cap far below one position's transfer (a session header alone is larger).
const TINY_CAP: u64 = 16;

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
    let budgets = format!("budgets = [{TINY_CAP}]");
    let grid = tiny_kv_grid("capped-too-small", &budgets, "[retry]\nattempts = 1");
    let ready = ready_cell(&grid, &receiver.endpoint(), &sharer.endpoint(), &["e1"]);
    let cell = ready.plan.cell.id.clone();
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path().join("run")).unwrap();
    run(&dir, vec![ready], run_options(&grid)).await.unwrap();
    let rows = dir.read_rows(&cell).unwrap().rows;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].status, RowStatus::Failed, "{rows:#?}");
    let e = rows[0].error.as_ref().unwrap();
    assert_eq!(e.kind, "FailedPrecondition", "{e:?}");
    assert_eq!(e.error_type.as_deref(), Some("cap_too_small"), "{e:?}");
}
