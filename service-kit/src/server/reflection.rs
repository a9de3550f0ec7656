//! gRPC server reflection for one service: both protocol versions (`grpc.reflection.v1` for
//! grpcurl and current clients, `grpc.reflection.v1alpha` for the stock Python
//! `grpcio-reflection` client and older tools), each listing exactly what the server serves.

use tonic_reflection::server::{
    Builder, Error,
    v1::{ServerReflection as V1, ServerReflectionServer as V1Server},
    v1alpha::{ServerReflection as V1Alpha, ServerReflectionServer as V1AlphaServer},
};

/// The health service every server runs beside its own.
pub const HEALTH: &str = "grpc.health.v1.Health";
/// Reflection, protocol v1.
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
/// Reflection, protocol v1alpha.
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The services a server with `service` serves, as reflection lists them: the service itself,
/// health, and both reflection versions (listed as every gRPC reflection server lists itself).
pub fn served(service: &'static str) -> [&'static str; 4] {
    [service, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA]
}

/// A builder with every descriptor the listed services need (the project's protos, health's,
/// both reflection versions') and the list restricted to `served(service)`: the project's
/// descriptor set holds both the sharer's and the receiver's, only one of which is served.
fn builder(service: &'static str) -> Builder<'static> {
    let mut b = Builder::configure()
        .register_encoded_file_descriptor_set(kvwire_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in served(service) {
        b = b.with_service_name(name);
    }
    b
}

/// Both reflection services for a server of `service`.
pub fn services(
    service: &'static str,
) -> Result<(V1Server<impl V1>, V1AlphaServer<impl V1Alpha>), Error> {
    Ok((
        builder(service).build_v1()?,
        builder(service).build_v1alpha()?,
    ))
}
