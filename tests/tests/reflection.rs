//! gRPC reflection on both services, through both protocol versions (v1: grpcurl; v1alpha: the
//! stock Python `grpcio-reflection` client): each lists exactly what it serves (its service,
//! health, reflection) and resolves the descriptor of each.

use std::collections::BTreeSet;

use e2e_tests::{TINY_MODEL, start_receiver, start_sharer};
use kvwire_proto::service_names::{RECEIVER, SHARER};
use tonic::codegen::tokio_stream;
use tonic::transport::Channel;
use tonic_reflection::pb::{v1, v1alpha};

const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

async fn channel(endpoint: String) -> Channel {
    Channel::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One reflection request over protocol v1; the answer.
async fn ask_v1(
    channel: &Channel,
    request: v1::server_reflection_request::MessageRequest,
) -> v1::server_reflection_response::MessageResponse {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    answers
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

/// The same over protocol v1alpha.
async fn ask_v1alpha(
    channel: &Channel,
    request: v1alpha::server_reflection_request::MessageRequest,
) -> v1alpha::server_reflection_response::MessageResponse {
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    answers
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

async fn check_server(endpoint: String, own: &str) {
    use v1::server_reflection_request::MessageRequest as Q1;
    use v1::server_reflection_response::MessageResponse as A1;
    use v1alpha::server_reflection_request::MessageRequest as Qa;
    use v1alpha::server_reflection_response::MessageResponse as Aa;
    let channel = channel(endpoint).await;
    let expected: BTreeSet<String> = [own, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA]
        .into_iter()
        .map(String::from)
        .collect();

    let A1::ListServicesResponse(list) = ask_v1(&channel, Q1::ListServices(String::new())).await
    else {
        panic!("{own}: v1 list_services answered something else");
    };
    let listed: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_eq!(listed, expected, "{own} over v1");

    let Aa::ListServicesResponse(list) =
        ask_v1alpha(&channel, Qa::ListServices(String::new())).await
    else {
        panic!("{own}: v1alpha list_services answered something else");
    };
    let listed: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_eq!(listed, expected, "{own} over v1alpha");

    // Every listed service resolves to its descriptor, over both versions.
    for name in &expected {
        let answer = ask_v1(&channel, Q1::FileContainingSymbol(name.clone())).await;
        assert!(
            matches!(&answer, A1::FileDescriptorResponse(f) if !f.file_descriptor_proto.is_empty()),
            "{own}: v1 symbol {name}: {answer:?}"
        );
        let answer = ask_v1alpha(&channel, Qa::FileContainingSymbol(name.clone())).await;
        assert!(
            matches!(&answer, Aa::FileDescriptorResponse(f) if !f.file_descriptor_proto.is_empty()),
            "{own}: v1alpha symbol {name}: {answer:?}"
        );
    }
}

#[tokio::test]
async fn each_server_lists_exactly_what_it_serves_over_v1_and_v1alpha() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    check_server(sharer.endpoint(), SHARER).await;
    check_server(receiver.endpoint(), RECEIVER).await;
}
