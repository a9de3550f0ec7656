//! deploy/k8s: the services' config files the ConfigMap carries load with the services' own
//! config types (unknown keys refused) and pass their checks; the manifests name the ports,
//! config paths, token path and gRPC health services those files and the code use; and, where
//! `kubernetes-validate` is installed (.ci/run installs it from PyPI), the manifests pass its
//! strict schema check for Kubernetes 1.37 (offline: the schemas ship with the package).

use std::path::{Path, PathBuf};
use std::process::Command;

use kvwire_proto::service_names;
use receiver_svc::ReceiverConfig;
use service_kit::config::{ServiceConfig, load_layered};
use sharer_svc::SharerConfig;

fn k8s(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/k8s")
        .join(file)
}

fn text(file: &str) -> String {
    std::fs::read_to_string(k8s(file)).unwrap_or_else(|e| panic!("deploy/k8s/{file}: {e}"))
}

/// Loads a config file alone (an environment prefix nobody sets); its checks run by [`valid`].
fn load<T: ServiceConfig>(file: &str) -> T {
    load_layered(Some(&k8s(file)), "KVWIRE_K8S_TEST_UNSET")
        .unwrap_or_else(|e| panic!("deploy/k8s/{file}: {e}"))
}

/// Runs a config's checks as the pod would pass them: its GPU and its mounted token file are
/// not here, so `device` becomes `cpu` (this test binary is a CPU build) and the token files
/// a file of one token.
fn valid<T: ServiceConfig>(
    file: &str,
    mut config: T,
    place: impl FnOnce(&mut T, &str),
    token: &Path,
) {
    place(&mut config, token.to_str().unwrap());
    config
        .validate()
        .unwrap_or_else(|e| panic!("deploy/k8s/{file}: {e}"));
}

/// What one role's Deployment and Service must say.
fn check_manifest(manifest: &str, binary: &str, config_file: &str, port: u16, health: &str) {
    let m = text(manifest);
    for needle in [
        format!("command: [\"{binary}\", \"--config\", \"/etc/kvwire/{config_file}\"]"),
        format!("containerPort: {port}"),
        format!("port: {port}"),
        format!("service: {health}"),
        "mountPath: /etc/kvwire\n".to_string(),
        "mountPath: /etc/kvwire-token\n".to_string(),
        "name: kvwire-config".to_string(),
        "secretName: kvwire-token".to_string(),
        "nvidia.com/gpu: 1".to_string(),
        "kind: Deployment".to_string(),
        "kind: Service".to_string(),
    ] {
        assert!(
            m.contains(&needle),
            "deploy/k8s/{manifest} lacks {needle:?}"
        );
    }
    for probe in ["startupProbe:", "readinessProbe:", "livenessProbe:"] {
        let at = m
            .find(probe)
            .unwrap_or_else(|| panic!("{manifest}: no {probe}"));
        let body = &m[at..];
        let grpc = body.find("grpc:").expect("a gRPC probe");
        assert!(
            body[grpc..].starts_with(&format!("grpc:\n              port: {port}")),
            "{manifest}: {probe} does not probe gRPC port {port}"
        );
    }
}

#[test]
fn the_configmap_files_are_valid_service_configs_the_manifests_agree_with() {
    let sharer: SharerConfig = load("sharer.toml");
    let receiver: ReceiverConfig = load("receiver.toml");
    assert_eq!(sharer.listen_addr.port(), 50051);
    assert_eq!(receiver.listen_addr.port(), 50052);
    assert_eq!(receiver.sharer_endpoint, "http://kvwire-sharer:50051");
    for (device, dtype) in [
        (&sharer.device, &sharer.dtype),
        (&receiver.device, &receiver.dtype),
    ] {
        assert_eq!((device.as_str(), dtype.as_str()), ("cuda:0", "bf16"));
    }
    const TOKEN: &str = "/etc/kvwire-token/token";
    assert_eq!(sharer.auth.tokens_file, TOKEN);
    assert_eq!(receiver.auth.tokens_file, TOKEN);
    assert_eq!(receiver.sharer_client.token_file, TOKEN);
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "a-token-of-the-secret\n").unwrap();
    valid(
        "sharer.toml",
        sharer,
        |c, t| {
            c.device = "cpu".into();
            c.dtype = "f32".into();
            c.auth.tokens_file = t.into();
        },
        &token,
    );
    valid(
        "receiver.toml",
        receiver,
        |c, t| {
            c.device = "cpu".into();
            c.dtype = "f32".into();
            c.auth.tokens_file = t.into();
            c.sharer_client.token_file = t.into();
        },
        &token,
    );
    check_manifest(
        "sharer.yaml",
        "sharer-svc",
        "sharer.toml",
        50051,
        service_names::SHARER,
    );
    check_manifest(
        "receiver.yaml",
        "receiver-svc",
        "receiver.toml",
        50052,
        service_names::RECEIVER,
    );
    let kustomization = text("kustomization.yaml");
    for needle in [
        "- sharer.yaml",
        "- receiver.yaml",
        "name: kvwire-config",
        "- sharer.toml",
        "- receiver.toml",
    ] {
        assert!(
            kustomization.contains(needle),
            "kustomization.yaml lacks {needle:?}"
        );
    }
}

#[test]
fn the_manifests_pass_the_kubernetes_schema_check() {
    let run = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .arg(k8s("sharer.yaml"))
        .arg(k8s("receiver.yaml"))
        .output();
    let out = match run {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "skipped: kubernetes-validate is not installed ({e}); `pip install \
                 kubernetes-validate` (.ci/run does)"
            );
            return;
        }
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    // Two resources per file, each one checked.
    assert_eq!(
        report.matches(" passed for resource ").count(),
        4,
        "{report}"
    );
}
