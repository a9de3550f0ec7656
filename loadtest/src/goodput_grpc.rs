//! The gRPC side of `loadtest goodput`: a transport-only Sharer (its Share streams prepared
//! frames through a bounded channel, as the real sharer's producer does, with no model) served
//! by the services' own builders (`sharer_svc::sharer_server` with the default sharer
//! config's message limits, `service_kit::server::serve_grpc` with its connection bounds,
//! counting, health and reflection), and read by the receiver's own pooled sharer channels
//! (`receiver_svc::channels::SharerChannels` with the default receiver config). Only the
//! HTTP/2 settings change between the tuned and the baseline server/client pair.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvwire_proto::v1 as pb;
use kvwire_proto::v1::sharer_server::Sharer;
use prost::bytes::Bytes;
use receiver_svc::ReceiverConfig;
use receiver_svc::channels::{ChannelSettings, SharerChannels};
use service_kit::transport::ServerTransport;
use service_kit::transport::client::ClientTransport;
use service_kit::transport::http2::Http2Tuning;
use sharer_svc::SharerConfig;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

type ChunkStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ShareChunk, Status>> + Send>>;

/// A Sharer whose Share streams the same frames every call; its other methods are not
/// served (this is a transport benchmark).
#[derive(Debug, Clone)]
struct FrameSharer {
    frames: Arc<Vec<Bytes>>,
    buffer: usize,
}

#[tonic::async_trait]
impl Sharer for FrameSharer {
    type ShareStream = ChunkStream;
    type RefineStream = ChunkStream;

    async fn share(
        &self,
        _request: Request<pb::ShareRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let (tx, rx) = mpsc::channel(self.buffer);
        let frames = self.frames.clone();
        tokio::spawn(async move {
            for (i, frame) in frames.iter().enumerate() {
                let chunk = pb::ShareChunk {
                    frame: frame.clone(),
                    layer: i.checked_sub(1).map(|l| l as u32),
                    session_id: if i == 0 {
                        "goodput".into()
                    } else {
                        String::new()
                    },
                    timings: None,
                    prompt_tokens: 0,
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn refine(
        &self,
        _request: Request<pb::RefineRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        Err(Status::unimplemented("goodput sharer: Share only"))
    }

    async fn release(
        &self,
        _request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        Err(Status::unimplemented("goodput sharer: Share only"))
    }

    async fn message(
        &self,
        _request: Request<pb::MessageRequest>,
    ) -> Result<Response<pb::MessageReply>, Status> {
        Err(Status::unimplemented("goodput sharer: Share only"))
    }

    async fn answer(
        &self,
        _request: Request<pb::AnswerRequest>,
    ) -> Result<Response<pb::AnswerReply>, Status> {
        Err(Status::unimplemented("goodput sharer: Share only"))
    }

    async fn info(
        &self,
        _request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        Err(Status::unimplemented("goodput sharer: Share only"))
    }
}

/// A served transport-only sharer and the receiver's channel pool to it.
#[derive(Debug)]
pub struct GrpcPair {
    url: String,
    channels: SharerChannels,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), service_kit::server::ServeError>>,
}

impl GrpcPair {
    /// Serves `frames` on loopback with `http2` on both the server and the client.
    pub async fn start(frames: Arc<Vec<Bytes>>, http2: Http2Tuning) -> anyhow::Result<Self> {
        let sharer_config = SharerConfig::default();
        let service = FrameSharer {
            frames,
            buffer: sharer_config.limits.stream_buffer_frames,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let mut transport = ServerTransport::plaintext();
        transport.http2 = http2;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(service_kit::server::serve_grpc(
            "sharer",
            sharer_svc::sharer_server(service, &sharer_config),
            listener,
            transport,
            async move {
                let _ = stopped.await;
            },
        ));
        let client = ClientTransport::default().with_http2(http2);
        let channels =
            SharerChannels::new(ChannelSettings::new(&ReceiverConfig::default(), client));
        Ok(Self {
            url,
            channels,
            stop: Some(stop),
            server,
        })
    }

    /// `shares` Share calls, one after another on the pooled connection; the frame bytes
    /// received and the time they took.
    pub async fn transfer(&mut self, shares: u64) -> anyhow::Result<(u64, Duration)> {
        let start = Instant::now();
        let mut total = 0u64;
        for _ in 0..shares {
            let mut checkout = self.channels.checkout(&self.url).await?;
            let mut stream = checkout
                .begin()
                .share(pb::ShareRequest::default())
                .await?
                .into_inner();
            while let Some(chunk) = stream.message().await? {
                total += chunk.frame.len() as u64;
            }
            checkout.finish();
        }
        Ok((total, start.elapsed()))
    }

    /// Connections the client opened (1 when every call reused the first).
    pub fn connections(&self) -> u64 {
        self.channels.opened()
    }

    /// Stops the server.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.channels);
        Ok(self.server.await??)
    }
}
