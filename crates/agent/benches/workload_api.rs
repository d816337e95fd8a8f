//! Latency of FetchJWTSVID through the agent socket when the SVID is cached, next to the first
//! fetch of each caller, which goes to the server.
//!
//! Run with `cargo bench -p mayfly-agent --bench workload_api`. Settings through the environment:
//! `MAYFLY_BENCH_CALLS` (sequential cached calls, default 20000) and `MAYFLY_BENCH_CONCURRENCY`
//! (clients calling at once in the throughput case, default 16). The server, the agent and the
//! gRPC clients run in this process and share the machine's cores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestServer, client, request, socket_path, start_agent};
use mayfly_agent::proto::JwtsvidRequest;

const CONFIG: &str = r#"
trust_providers:
  - {name: local, kind: unix}
client_workloads:
  - name: web
    identities:
      - {trust_provider: local, match: {uid: "${UID}", agent: bench-1}}
server_workloads:
  - {name: payments, host: payments.example, port: 443}
credential_providers:
  - {name: payments-jwt, kind: jwt_svid, audience: [payments], ttl: 1h}
access_policies:
  - {name: web-payments, client_workload: web, server_workload: payments, credential_provider: payments-jwt, trust_providers: [local]}
"#;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn svid_request() -> tonic::Request<JwtsvidRequest> {
    request(JwtsvidRequest {
        audience: vec!["payments".to_string()],
        spiffe_id: String::new(),
    })
}

/// Returns the value at `fraction` of the sorted `latencies`.
fn percentile(latencies: &[Duration], fraction: f64) -> Duration {
    let index = ((latencies.len() - 1) as f64 * fraction).round() as usize;
    latencies[index]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn main() {
    let calls = env_number("MAYFLY_BENCH_CALLS", 20_000);
    let concurrency = env_number("MAYFLY_BENCH_CONCURRENCY", 16);
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    println!(
        "machine: {threads} cores; {calls} sequential calls; {concurrency} concurrent clients"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = TestServer::start().await;
        server.apply(CONFIG).await;
        let dir = tempfile::tempdir().unwrap();
        let token = server.join_token("bench-1").await;
        let _agent = start_agent(&server.base, dir.path(), Some(token)).await;
        let socket = socket_path(dir.path());

        // The first call of a caller goes to the server: attestation, decision, signing, audit.
        let mut api = client(&socket).await;
        let started = Instant::now();
        api.fetch_jwtsvid(svid_request()).await.expect("first fetch");
        println!("first FetchJWTSVID (server round trip): {:>8.0} us", micros(started.elapsed()));

        for _ in 0..1000 {
            api.fetch_jwtsvid(svid_request()).await.expect("warm-up fetch");
        }
        let mut latencies = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            api.fetch_jwtsvid(svid_request()).await.expect("cached fetch");
            latencies.push(started.elapsed());
        }
        latencies.sort();
        println!(
            "cached FetchJWTSVID, one client:       p50 {:>6.0} us   p99 {:>6.0} us   max {:>6.0} us",
            micros(percentile(&latencies, 0.50)),
            micros(percentile(&latencies, 0.99)),
            micros(*latencies.last().unwrap()),
        );

        let per_client = calls / concurrency.max(1);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let socket = socket.clone();
            tasks.push(tokio::spawn(async move {
                let mut api = client(&socket).await;
                let mut latencies = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let started = Instant::now();
                    api.fetch_jwtsvid(svid_request()).await.expect("cached fetch");
                    latencies.push(started.elapsed());
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let elapsed = started.elapsed();
        latencies.sort();
        println!(
            "cached FetchJWTSVID, {concurrency} clients:     p50 {:>6.0} us   p99 {:>6.0} us   {:>8.0} calls/s",
            micros(percentile(&latencies, 0.50)),
            micros(percentile(&latencies, 0.99)),
            latencies.len() as f64 / elapsed.as_secs_f64(),
        );
    });
}
