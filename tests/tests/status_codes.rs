//! The status table of `docs/STATUS_CODES.md`, row by row where it changed (issue 18): a
//! request that does not decode is INVALID_ARGUMENT, a service or method a server does not
//! serve is UNIMPLEMENTED with a message, a prompt over the limit is INVALID_ARGUMENT on both
//! services, and a sharer endpoint that does not speak gRPC is UNAVAILABLE at the receiver.

use e2e_tests::{TINY_MODEL, example, start_receiver, start_sharer};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use prost::bytes::{Buf as _, BufMut as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Sends request bytes as they are (no protobuf encoding), for requests a typed client cannot
/// build.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Calls `path` on `endpoint` with `body` as the request message; the status it fails with.
async fn raw_call(endpoint: String, path: &'static str, body: Vec<u8>) -> Status {
    let channel = Channel::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let uri = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    match grpc
        .server_streaming(tonic::Request::new(body), uri, RawCodec)
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{path}: succeeded"),
                    Err(status) => return status,
                }
            }
        }
    }
}

/// Not a protobuf message: a field key whose varint never ends.
const MALFORMED: [u8; 11] = [0xff; 11];
/// ShareRequest { text (field 2) = bytes that are not UTF-8 }.
const SHARE_NOT_UTF8: [u8; 4] = [0x12, 0x02, 0xc3, 0x28];
/// EvaluateRequest { sharer_endpoint (field 6) = bytes that are not UTF-8 }.
const EVALUATE_NOT_UTF8: [u8; 4] = [0x32, 0x02, 0xc3, 0x28];

const SHARE: &str = "/kvwire.c2c.v1.Sharer/Share";
const EVALUATE: &str = "/kvwire.c2c.v1.Receiver/Evaluate";

#[tokio::test]
async fn requests_that_do_not_decode_are_invalid_argument() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    for (endpoint, path, body) in [
        (sharer.endpoint(), SHARE, MALFORMED.to_vec()),
        (sharer.endpoint(), SHARE, SHARE_NOT_UTF8.to_vec()),
        (receiver.endpoint(), EVALUATE, MALFORMED.to_vec()),
        (receiver.endpoint(), EVALUATE, EVALUATE_NOT_UTF8.to_vec()),
    ] {
        let status = raw_call(endpoint, path, body).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(
            status
                .message()
                .contains("failed to decode Protobuf message"),
            "{path}: {status:?}"
        );
    }
}

#[tokio::test]
async fn a_service_or_method_not_served_is_unimplemented_with_a_message() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    for (endpoint, path, own) in [
        (sharer.endpoint(), EVALUATE, "kvwire.c2c.v1.Sharer"),
        (receiver.endpoint(), SHARE, "kvwire.c2c.v1.Receiver"),
        (
            sharer.endpoint(),
            "/kvwire.c2c.v1.Sharer/Nope",
            "kvwire.c2c.v1.Sharer",
        ),
    ] {
        let status = raw_call(endpoint, path, Vec::new()).await;
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
        assert!(
            status.message().contains(path)
                && status.message().contains(own)
                && status.message().contains("grpc.health.v1.Health"),
            "{path}: {status:?}"
        );
    }
}

/// A sharer whose prompt limit is `max_prompt_tokens`.
async fn small_sharer(max_prompt_tokens: usize) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = sharer_svc::SharerConfig {
        model: TINY_MODEL.into(),
        ..Default::default()
    };
    config.limits.max_prompt_tokens = max_prompt_tokens;
    let (tx, rx) = oneshot::channel::<()>();
    let served = sharer_svc::serve(config, listener, async move {
        let _ = rx.await;
    });
    tokio::spawn(served);
    e2e_tests::wait_serving(addr, kvwire_proto::service_names::SHARER).await;
    (format!("http://{addr}"), tx)
}

#[tokio::test]
async fn a_prompt_over_the_limit_is_invalid_argument_on_both_services() {
    let (sharer, _stop) = small_sharer(4).await;
    let mut client = SharerClient::connect(sharer.clone()).await.unwrap();
    let req = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Example(example("long"))),
        ..Default::default()
    };
    let status = match client.share(req).await {
        Err(status) => status,
        Ok(r) => r.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "sharer: {status:?}");
    assert_eq!(
        status
            .metadata()
            .get(service_kit::rpc::ERROR_TYPE_KEY)
            .unwrap(),
        "prompt_too_long"
    );
    // The receiver passes the sharer's code through: the same code for the same fault.
    let receiver = start_receiver(TINY_MODEL, &sharer).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let req = pb::EvaluateRequest {
        example: Some(example("long")),
        method: pb::Method::Kv as i32,
        ..Default::default()
    };
    let status = client.evaluate(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "receiver: {status:?}");
}

/// A TCP server that answers every connection with `reply` after the client's first bytes,
/// then closes it: a port that does not speak gRPC (a web server, a metrics port, or nothing).
async fn not_grpc_server(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(reply).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_sharer_endpoint_that_is_not_grpc_is_unavailable() {
    for reply in [
        &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..],
        &b""[..],
    ] {
        let not_grpc = not_grpc_server(reply).await;
        let receiver = start_receiver(TINY_MODEL, &not_grpc).await;
        let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
        let req = pb::EvaluateRequest {
            example: Some(example("e1")),
            method: pb::Method::Kv as i32,
            ..Default::default()
        };
        let status = client.evaluate(req).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("did not answer over gRPC"),
            "{status:?}"
        );
        assert_eq!(
            status
                .metadata()
                .get(service_kit::rpc::ERROR_TYPE_KEY)
                .unwrap(),
            "sharer_transport"
        );
    }
}
