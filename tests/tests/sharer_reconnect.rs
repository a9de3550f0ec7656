//! The receiver reuses its connection to a sharer across evaluations (receiver-svc
//! `channels`); a sharer that restarts on the same address between two evaluations closes that
//! connection, and the next evaluation is answered at its first try on a fresh one instead of
//! failing on the closed one.

use e2e_tests::{TINY_MODEL, example, rebind, start_receiver, start_sharer, start_sharer_on};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;

fn kv_request() -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        example: Some(example("e1")),
        method: pb::Method::Kv as i32,
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Int8 as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sharer_restarted_between_evaluations_is_reached_on_a_fresh_connection() {
    let first = start_sharer(TINY_MODEL).await;
    let addr = first.addr;
    let receiver = start_receiver(TINY_MODEL, &first.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let before = client.evaluate(kv_request()).await.unwrap().into_inner();
    // Between two evaluations, with no pause after: the sharer stops (closing the idle pooled
    // connection) and a new one comes up on its address.
    first.stop().await.unwrap();
    let second = start_sharer_on(TINY_MODEL, rebind(addr).await).await;
    let after = client
        .evaluate(kv_request())
        .await
        .expect("answered at the first try after the restart")
        .into_inner();
    assert_eq!(after.prediction, before.prediction);
    drop(receiver);
    second.stop().await.unwrap();
}
