//! NATS log streams against the local nats-server with JetStream on 127.0.0.1:4222. Each test
//! creates its own JetStream stream with unique names and deletes it at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::{TestIssuer, TestServer, basic_config};
use mayfly_domain::duration::Seconds;
use serde_json::{Value, json};

const NATS_ADDRESS: &str = "127.0.0.1:4222";

async fn jetstream_context() -> jetstream::Context {
    let client = async_nats::connect(NATS_ADDRESS)
        .await
        .expect("nats-server with JetStream runs on 127.0.0.1:4222 (.ci/run starts it)");
    jetstream::new(client)
}

/// Returns a unique stream name and the subject it captures.
fn unique_names() -> (String, String) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    (
        format!("mayfly-test-{tag}"),
        format!("mayfly.test.{tag}.audit"),
    )
}

async fn create_stream(
    context: &jetstream::Context,
    name: &str,
    subject: &str,
) -> jetstream::stream::Stream {
    context
        .create_stream(jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Returns every message of the JetStream stream as (Nats-Msg-Id header, parsed payload).
async fn messages(stream: &mut jetstream::stream::Stream) -> Vec<(String, Value)> {
    let count = stream.info().await.unwrap().state.messages;
    let mut found = Vec::new();
    for seq in 1..=count {
        let message = stream.get_raw_message(seq).await.unwrap();
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|value| value.to_string())
            .unwrap_or_default();
        found.push((id, serde_json::from_slice(&message.payload).unwrap()));
    }
    found
}

fn credential_messages(all: &[(String, Value)]) -> Vec<(String, Value)> {
    all.iter()
        .filter(|(_, payload)| payload["kind"] == "credential_request")
        .cloned()
        .collect()
}

async fn issue(server: &TestServer, issuer: &TestIssuer, count: usize) {
    for _ in 0..count {
        let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
        let (status, body) = server
            .credential_with_token(&evidence, json!({"server_workload": "payments"}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Waits until the JetStream stream contains `count` credential events or 15 seconds pass.
async fn wait_for_credentials(
    stream: &mut jetstream::stream::Stream,
    count: usize,
) -> Vec<(String, Value)> {
    let started = Instant::now();
    loop {
        let found = credential_messages(&messages(stream).await);
        if found.len() >= count || started.elapsed() > Duration::from_secs(15) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn jetstream_receives_events_with_message_ids() {
    let context = jetstream_context().await;
    let (name, subject) = unique_names();
    let mut stream = create_stream(&context, &name, &subject).await;

    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let config = format!(
        "log_streams:\n  - {{name: bus, kind: nats, address: \"{NATS_ADDRESS}\", subject: {subject}}}\n"
    );
    server
        .apply(&format!("{}{config}", basic_config(&issuer)))
        .await;
    issue(&server, &issuer, 5).await;

    let found = wait_for_credentials(&mut stream, 5).await;
    assert_eq!(found.len(), 5, "{found:?}");
    for (id, payload) in &found {
        assert_eq!(
            payload["id"].as_str(),
            Some(id.as_str()),
            "the message id is the event id"
        );
    }
    let seqs: Vec<i64> = found
        .iter()
        .map(|(_, payload)| payload["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "in order: {seqs:?}"
    );

    context.delete_stream(&name).await.unwrap();
}

#[tokio::test]
async fn missing_jetstream_stream_then_created_gets_every_event() {
    const COUNT: usize = 10;
    let context = jetstream_context().await;
    let (name, subject) = unique_names();

    let server =
        TestServer::start_with(|settings| settings.log_stream_max_backoff = Seconds(1)).await;
    let issuer = TestIssuer::start().await;
    let config = format!(
        "log_streams:\n  - {{name: bus, kind: nats, address: \"{NATS_ADDRESS}\", subject: {subject}, timeout: 2s}}\n"
    );
    server
        .apply(&format!("{}{config}", basic_config(&issuer)))
        .await;
    issue(&server, &issuer, COUNT).await;

    // No JetStream stream captures the subject yet, so every publish fails.
    let mut entry = Value::Null;
    for _ in 0..100 {
        entry = server.get("/v1/log-streams/bus").await.1;
        if entry["status"]["state"] == "failing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entry["status"]["state"], "failing", "{entry}");

    let mut stream = create_stream(&context, &name, &subject).await;
    let found = wait_for_credentials(&mut stream, COUNT).await;
    let ids: BTreeSet<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), COUNT, "{COUNT} distinct events");
    assert_eq!(
        found.len(),
        COUNT,
        "JetStream dropped any duplicate by its message id"
    );

    context.delete_stream(&name).await.unwrap();
}
