//! Server settings and the server process: settings files, the key-encryption key, TLS, restarts
//! on the same data directory, and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::{TestIssuer, TestServer, basic_config};
use mayfly_crypto::jwk::parse_jwk_set;
use mayfly_crypto::jwt_svid::validate_jwt_svid;
use mayfly_crypto::kek::KeyEncryptionKey;
use mayfly_domain::duration::Seconds;
use mayfly_server::settings::{Settings, TlsSettings};
use mayfly_store::{SqliteStore, Store};
use serde_json::{Value, json};

/// Writes `contents` to `name` in `dir` and returns the path.
fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Starts a server that must fail to start, and returns its error with every cause.
async fn start_error(settings: Settings) -> String {
    match mayfly_server::start(settings, None).await {
        Ok(server) => {
            server.shutdown().await;
            panic!("the server started");
        }
        Err(error) => format!("{error:#}"),
    }
}

/// Settings of a production (non-dev) server on 127.0.0.1 with its data in `dir`.
fn production_settings(dir: &Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        trust_domain: Some("prod.example.com".to_string()),
        ..Settings::default()
    }
}

fn new_kek_file(dir: &Path, name: &str) -> PathBuf {
    let kek = KeyEncryptionKey::generate().unwrap();
    write_file(dir, name, &format!("{}\n", kek.to_base64().as_str()))
}

// Settings files.

#[test]
fn settings_file_values_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "mayfly.toml",
        "listen = \"127.0.0.1:9000\"\naudit_retention_days = 30\nmax_body_bytes = 4096\nkey_rotation_period = \"2d\"\n",
    );

    let settings = Settings::from_file(&path).unwrap();

    assert_eq!(settings.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(settings.audit_retention_days, 30);
    assert_eq!(settings.max_body_bytes, 4096);
    assert_eq!(settings.key_rotation_period.as_secs(), 2 * 86_400);
    assert!(!settings.dev);
}

#[test]
fn unknown_settings_key_is_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "mayfly.toml",
        "listen = \"127.0.0.1:9000\"\nlisten_adress = \"0.0.0.0:80\"\n",
    );

    let message = Settings::from_file(&path).err().unwrap().to_string();

    assert!(message.contains("listen_adress"), "{message}");
    assert!(message.contains("mayfly.toml"), "{message}");
}

#[test]
fn unknown_tls_key_is_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "mayfly.toml",
        "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_ca = \"ca.pem\"\n",
    );

    let message = Settings::from_file(&path).err().unwrap().to_string();

    assert!(message.contains("client_ca"), "{message}");
}

#[tokio::test]
async fn audit_retention_out_of_range_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for days in [0, 366] {
        let path = write_file(
            dir.path(),
            "mayfly.toml",
            &format!("audit_retention_days = {days}\n"),
        );
        let mut settings = Settings::from_file(&path).unwrap();
        settings.dev = true;

        let message = settings.validate().err().unwrap().to_string();

        assert_eq!(
            message,
            format!(
                "invalid setting audit_retention_days = \"{days}\": must be between 1 and 365 days"
            )
        );
        settings.data_dir = dir.path().join(format!("data-{days}"));
        settings.listen = "127.0.0.1:0".parse().unwrap();
        let error = start_error(settings).await;
        assert!(error.contains("audit_retention_days"), "{error}");
    }
}

#[tokio::test]
async fn audit_retention_bounds_accepted() {
    for days in [1, 365] {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(
            dir.path(),
            "mayfly.toml",
            &format!("audit_retention_days = {days}\n"),
        );
        let settings = Settings::from_file(&path).unwrap();
        assert_eq!(settings.audit_retention_days, days);
        assert!(settings.validate().is_ok(), "{days} days");

        let mut server =
            TestServer::start_with(|settings| settings.audit_retention_days = days).await;
        let (status, _) = server.get("/readyz").await;
        assert_eq!(status, 200, "{days} days");
        server.stop().await;
    }
}

#[tokio::test]
async fn checkpoint_interval_out_of_range_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (value, shown) in [("0s", "0s"), ("25h", "25h")] {
        let path = write_file(
            dir.path(),
            "mayfly.toml",
            &format!("checkpoint_interval = \"{value}\"\n"),
        );
        let mut settings = Settings::from_file(&path).unwrap();
        settings.dev = true;

        let message = settings.validate().err().unwrap().to_string();

        assert!(message.contains("checkpoint_interval"), "{message}");
        assert!(message.contains(shown), "{message}");
        assert!(message.contains("must be between 1s and 24h"), "{message}");
        settings.data_dir = dir.path().join(format!("data-{value}"));
        settings.listen = "127.0.0.1:0".parse().unwrap();
        let error = start_error(settings).await;
        assert!(error.contains("checkpoint_interval"), "{error}");
    }
}

#[tokio::test]
async fn checkpoint_interval_of_one_second_accepted() {
    let mut server =
        TestServer::start_with(|settings| settings.checkpoint_interval = Seconds(1)).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

// The key-encryption key.

#[tokio::test]
async fn production_server_without_kek_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();

    let error = start_error(production_settings(dir.path())).await;

    assert!(error.contains("kek_file"), "{error}");
    assert!(error.contains("kek_env"), "{error}");
}

#[tokio::test]
async fn kek_env_naming_unset_variable_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        kek_env: Some("MAYFLY_TEST_KEK_NEVER_SET".to_string()),
        ..production_settings(dir.path())
    };

    let error = start_error(settings).await;

    assert!(error.contains("MAYFLY_TEST_KEK_NEVER_SET"), "{error}");
}

#[tokio::test]
async fn different_kek_is_refused_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first_kek = new_kek_file(dir.path(), "kek-1");
    let second_kek = new_kek_file(dir.path(), "kek-2");
    let settings = Settings {
        kek_file: Some(first_kek.clone()),
        ..production_settings(dir.path())
    };
    let server = mayfly_server::start(settings.clone(), None).await.unwrap();
    server.shutdown().await;

    let error = start_error(Settings {
        kek_file: Some(second_kek),
        ..settings.clone()
    })
    .await;

    assert!(
        error.contains("not the one this data directory was created with"),
        "{error}"
    );
    let server = mayfly_server::start(settings, None).await.unwrap();
    assert!(server.first_admin_token.is_none());
    server.shutdown().await;
}

// TLS.

/// Writes a self-signed certificate for 127.0.0.1 and localhost with its key. Returns the
/// certificate PEM and the TLS settings that use it.
fn self_signed_tls(dir: &Path) -> (String, TlsSettings) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    let cert_file = write_file(dir, "cert.pem", &cert_pem);
    let key_file = write_file(dir, "key.pem", &certified.signing_key.serialize_pem());
    (
        cert_pem,
        TlsSettings {
            cert_file,
            key_file,
        },
    )
}

#[tokio::test]
async fn tls_listener_serves_https_with_given_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (cert_pem, tls) = self_signed_tls(certs.path());
    let server = TestServer::start_with(|settings| settings.tls = Some(tls)).await;
    let certificate = reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([certificate])
        .build()
        .unwrap();

    let health = client.get(server.url("/healthz")).send().await.unwrap();
    let discovery: Value = client
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(discovery["issuer"], server.base);
    assert_eq!(
        discovery["jwks_uri"],
        format!("{}/.well-known/jwks.json", server.base)
    );
}

#[tokio::test]
async fn tls_listener_rejects_plain_http() {
    let certs = tempfile::tempdir().unwrap();
    let (_, tls) = self_signed_tls(certs.path());
    let server = TestServer::start_with(|settings| settings.tls = Some(tls)).await;

    let result = reqwest::get(format!("http://{}/healthz", server.running().addr)).await;

    assert!(result.is_err(), "plain HTTP got an answer: {result:?}");
}

#[tokio::test]
async fn invalid_tls_key_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tls) = self_signed_tls(dir.path());
    let garbage = write_file(
        dir.path(),
        "garbage.pem",
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    );
    let settings = Settings {
        dev: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        tls: Some(TlsSettings {
            cert_file: tls.cert_file,
            key_file: garbage,
        }),
        ..Settings::default()
    };

    let error = start_error(settings).await;

    assert!(error.contains("TLS"), "{error}");
}

#[tokio::test]
async fn tls_key_of_another_certificate_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tls) = self_signed_tls(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, other_tls) = self_signed_tls(other.path());
    let settings = Settings {
        dev: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        tls: Some(TlsSettings {
            cert_file: tls.cert_file,
            key_file: other_tls.key_file,
        }),
        ..Settings::default()
    };

    let error = start_error(settings).await;

    assert!(error.contains("do not form a usable pair"), "{error}");
}

#[tokio::test]
async fn missing_tls_certificate_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tls) = self_signed_tls(dir.path());
    let missing = dir.path().join("missing.pem");
    let settings = Settings {
        dev: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        tls: Some(TlsSettings {
            cert_file: missing,
            key_file: tls.key_file,
        }),
        ..Settings::default()
    };

    let error = start_error(settings).await;

    assert!(error.contains("missing.pem"), "{error}");
}

#[test]
fn x509_ca_settings_out_of_range_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("x509_ca_ttl = \"30m\"\n", "x509_ca_ttl"),
        ("x509_ca_ttl = \"2000d\"\n", "x509_ca_ttl"),
        ("x509_ca_publish_ahead = \"0s\"\n", "x509_ca_publish_ahead"),
        (
            "x509_ca_ttl = \"4h\"\nx509_ca_publish_ahead = \"2h\"\n",
            "x509_ca_publish_ahead",
        ),
    ];
    for (text, field) in cases {
        let path = write_file(dir.path(), "mayfly.toml", text);
        let settings = Settings::from_file(&path).unwrap();

        let message = settings
            .validate()
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();

        assert!(
            message.starts_with(&format!("invalid setting {field} = ")),
            "{text}: {message}"
        );
    }
}

#[test]
fn x509_ca_settings_read_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "mayfly.toml",
        "x509_ca_ttl = \"7d\"\nx509_ca_publish_ahead = \"30m\"\n",
    );
    let settings = Settings::from_file(&path).unwrap();

    assert_eq!(settings.x509_ca_ttl.as_secs(), 7 * 86_400);
    assert_eq!(settings.x509_ca_publish_ahead.as_secs(), 1800);
    assert!(settings.validate().is_ok());
}

// Restarts and shutdown.

async fn x509_authorities(server: &TestServer) -> Value {
    let (status, body) = server.get("/v1/x509-authorities").await;
    assert_eq!(status, 200, "{body}");
    body["x509_authorities"].clone()
}

#[tokio::test]
async fn x509_ca_survives_restart() {
    let mut first = TestServer::start().await;
    let before = x509_authorities(&first).await;
    assert_eq!(before.as_array().unwrap().len(), 1);
    assert_eq!(before[0]["state"], "active");
    first.stop().await;
    let data_dir = first.data_dir();

    let second = TestServer::start_with(|settings| settings.data_dir = data_dir).await;

    assert_eq!(
        x509_authorities(&second).await,
        before,
        "the sealed CA is reopened, not replaced"
    );
}

async fn published_kids(server: &TestServer) -> Vec<String> {
    let jwks: Value = server
        .http
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_string())
        .collect();
    kids.sort();
    kids
}

#[tokio::test]
async fn configuration_and_keys_survive_restart() {
    let issuer = TestIssuer::start().await;
    let mut first = TestServer::start().await;
    first.apply(&basic_config(&issuer)).await;
    let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
    let (status, body) = first
        .credential_with_token(&evidence, json!({"server_workload": "payments"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let svid = body["token"].as_str().unwrap().to_string();
    let (_, policy_before) = first.get("/v1/access-policies/billing-payments").await;
    let kids_before = published_kids(&first).await;
    first.stop().await;
    let data_dir = first.data_dir();

    let second = TestServer::start_with(|settings| settings.data_dir = data_dir).await;

    let (status, policy_after) = second.get("/v1/access-policies/billing-payments").await;
    assert_eq!(status, 200, "{policy_after}");
    assert_eq!(policy_after, policy_before);
    assert_eq!(published_kids(&second).await, kids_before);
    let jwks: Value = second
        .http
        .get(second.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (keys, skipped) = parse_jwk_set(&jwks);
    assert_eq!(skipped, Vec::<String>::new());
    let now = jiff::Timestamp::now().as_second();
    let validated = validate_jwt_svid(&svid, &keys, "payments", now).unwrap();
    assert_eq!(validated.sub.to_string(), "spiffe://mayfly.local/billing");
    let (status, body) = second
        .credential_with_token(&evidence, json!({"server_workload": "payments"}))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn audit_log_survives_restart_and_verifies() {
    let issuer = TestIssuer::start().await;
    let mut first = TestServer::start().await;
    first.apply(&basic_config(&issuer)).await;
    let events_before = first.audit_events("limit=1000").await;
    first.stop().await;
    let data_dir = first.data_dir();

    let second = TestServer::start_with(|settings| settings.data_dir = data_dir).await;

    let events_after = second.audit_events("limit=1000").await;
    assert!(events_after.ends_with(&events_before), "{events_after:?}");
    let (status, report) = second.get("/v1/audit/verify").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["problems"], json!([]));
}

#[tokio::test]
async fn shutdown_writes_final_checkpoint() {
    let issuer = TestIssuer::start().await;
    let mut server = TestServer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let store = server.running().state.store.clone();
    let head_before = store.audit_head().await.unwrap().unwrap();
    let checkpoint_before = store.latest_checkpoint().await.unwrap();
    assert!(
        checkpoint_before.is_none_or(|checkpoint| checkpoint.seq < head_before.0),
        "already anchored before shutdown"
    );
    let addr = server.running().addr;
    let socket = server.socket_path();

    server.stop().await;

    let reopened = SqliteStore::open(&server.data_dir().join("mayfly.db"))
        .await
        .unwrap();
    let (head_seq, head_hash) = reopened.audit_head().await.unwrap().unwrap();
    let checkpoint = reopened.latest_checkpoint().await.unwrap().unwrap();
    reopened.close().await;
    assert_eq!(checkpoint.seq, head_seq);
    assert_eq!(checkpoint.head_hash, head_hash);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the API still accepts connections"
    );
    assert!(!socket.exists(), "the workload socket file is left behind");
}

#[test]
fn settings_file_cannot_turn_on_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "mayfly.toml", "dev = true\n");
    let error = Settings::from_file(&path).unwrap_err().to_string();
    assert!(error.contains("dev"), "{error}");
}

#[tokio::test]
async fn second_server_on_same_data_dir_is_refused() {
    let first = TestServer::start().await;
    let settings = Settings {
        dev: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: first.data_dir(),
        ..Settings::default()
    };
    let error = start_error(settings).await;
    assert!(error.contains("in use by another mayfly server"), "{error}");

    let (status, _) = first
        .credential_over_socket(json!({"server_workload": "none"}))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn regular_file_at_socket_path_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let precious = write_file(dir.path(), "precious.txt", "keep me\n");
    let settings = Settings {
        dev: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        workload_socket: Some(precious.clone()),
        ..Settings::default()
    };
    let error = start_error(settings).await;
    assert!(error.contains("not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
}

#[tokio::test]
async fn listen_address_in_use_is_refused() {
    let first = TestServer::start().await;
    let taken = first.server.as_ref().unwrap().addr;
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        dev: true,
        listen: taken,
        data_dir: dir.path().join("data"),
        ..Settings::default()
    };
    let error = start_error(settings).await;
    assert!(
        error.contains(&format!("cannot listen on {taken}")),
        "{error}"
    );
}
