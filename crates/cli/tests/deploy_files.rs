//! The files in `deploy/` parse with the same code the binaries use, and the paths they name
//! are the directories that their unit or pod gives the process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use mayfly_agent::config::AgentFile;
use mayfly_server::settings::Settings;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Returns the value of `key=` in a systemd unit.
fn unit_value(unit: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    unit.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .trim()
        .to_string()
}

#[test]
fn systemd_server_files_agree() {
    let settings =
        Settings::from_file(&deploy("systemd/mayfly.toml")).expect("server settings parse");
    settings.validate().expect("server settings are valid");
    let unit = read("systemd/mayfly-server.service");
    let state = Path::new("/var/lib").join(unit_value(&unit, "StateDirectory"));
    assert_eq!(settings.data_dir, state);
    let runtime = Path::new("/run").join(unit_value(&unit, "RuntimeDirectory"));
    let socket = settings
        .workload_socket
        .expect("the example sets workload_socket");
    assert_eq!(socket.parent(), Some(runtime.as_path()));
    assert!(unit_value(&unit, "ExecStart").ends_with("--config /etc/mayfly/mayfly.toml"));
}

#[test]
fn systemd_agent_files_agree() {
    let file = AgentFile::load(&deploy("systemd/agent.toml")).expect("agent settings parse");
    let unit = read("systemd/mayfly-agent.service");
    let state = Path::new("/var/lib").join(unit_value(&unit, "StateDirectory"));
    assert_eq!(file.data_dir.as_deref(), Some(state.as_path()));
    let runtime = Path::new("/run").join(unit_value(&unit, "RuntimeDirectory"));
    for socket in [&file.socket, &file.http_socket] {
        let socket = socket.as_deref().expect("the example sets both sockets");
        assert_eq!(
            socket.parent(),
            Some(runtime.as_path()),
            "{}",
            socket.display()
        );
    }
    assert!(unit_value(&unit, "ExecStart").ends_with("--config /etc/mayfly/agent.toml"));
}

#[test]
fn kubernetes_sidecar_mounts_agent_paths() {
    let text = read("kubernetes/agent-sidecar.yaml");
    let documents: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("valid YAML"))
        .collect();
    let config_map = documents
        .iter()
        .find(|document| document["kind"] == "ConfigMap")
        .expect("a ConfigMap with the agent settings");
    let agent_toml = config_map["data"]["agent.toml"]
        .as_str()
        .expect("data.agent.toml");
    let scratch = tempfile::tempdir().unwrap();
    let settings_path = scratch.path().join("agent.toml");
    std::fs::write(&settings_path, agent_toml).unwrap();
    let file = AgentFile::load(&settings_path).expect("the embedded agent settings parse");

    let pod = &documents
        .iter()
        .find(|document| document["kind"] == "StatefulSet")
        .expect("a StatefulSet")["spec"]["template"]["spec"];
    assert_eq!(
        pod["shareProcessNamespace"], true,
        "attestation needs the application's /proc"
    );
    let containers = pod["containers"].as_sequence().expect("containers");
    let mounts = |name: &str| -> Vec<String> {
        let container = containers
            .iter()
            .find(|container| container["name"] == name)
            .unwrap_or_else(|| panic!("a container named {name}"));
        container["volumeMounts"]
            .as_sequence()
            .expect("volumeMounts")
            .iter()
            .map(|mount| mount["mountPath"].as_str().expect("mountPath").to_string())
            .collect()
    };
    let agent_mounts = mounts("mayfly-agent");
    let mounted = |path: &Path| agent_mounts.iter().any(|mount| path.starts_with(mount));
    for path in [
        file.data_dir.as_deref(),
        file.socket.as_deref(),
        file.http_socket.as_deref(),
        file.join_token_file.as_deref(),
        file.server_ca.as_deref(),
    ] {
        let path = path.expect("the example sets every path");
        assert!(
            mounted(path),
            "{} is not on a volume of the agent container",
            path.display()
        );
    }
    let socket_dir = file.socket.as_deref().and_then(Path::parent).unwrap();
    assert!(
        mounts("web")
            .iter()
            .any(|mount| Path::new(mount) == socket_dir),
        "the application must see the agent's socket directory"
    );
}
