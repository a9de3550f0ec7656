//! Sharer clients for the session tests (per-client limits, the session store): a client
//! presenting a bearer token, a precision upgrade of one held position, a status's label.

use std::path::Path;

use kvwire_proto::v1 as pb;
use kvwire_proto::v1::sharer_client::SharerClient;
use service_kit::rpc::ERROR_TYPE_KEY;
use service_kit::transport::client::{ClientChannel, ClientTransport};
use service_kit::transport::settings::ClientSettings;
use tonic::Status;

/// A sharer client over the test transport.
pub type Client = SharerClient<ClientChannel>;

/// A sharer client presenting the bearer token in `token_file` (none when the path is empty).
pub async fn token_client(url: &str, token_file: &Path) -> Client {
    let settings = ClientSettings {
        token_file: token_file.display().to_string(),
        ..ClientSettings::default()
    };
    let transport = ClientTransport::load(&settings, "test").unwrap();
    let channel = transport.endpoint(url).unwrap().connect().await.unwrap();
    SharerClient::new(transport.wrap(channel))
}

/// A precision upgrade of position 0 in session `id`: the records received, or the status.
pub async fn refine_upgrade(client: &mut Client, id: &str) -> Result<usize, Status> {
    let req = pb::RefineRequest {
        session_id: id.to_string(),
        want: Some(pb::refine_request::Want::Upgrade(pb::PrecisionUpgrade {
            positions: vec![0],
            payload: pb::Payload::Fp16 as i32,
        })),
        granularity: 0,
    };
    let mut stream = client.refine(req).await?.into_inner();
    let mut records = 0;
    while stream.message().await?.is_some() {
        records += 1;
    }
    Ok(records)
}

/// The status's `kvwire-error-type` label ("" when none).
pub fn error_type(status: &Status) -> &str {
    status
        .metadata()
        .get(ERROR_TYPE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}
