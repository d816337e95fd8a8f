//! Latency of a cached FetchJWTSVID through the agent's Unix socket: attestation of the caller
//! from the kernel, the cache lookup and the gRPC round trip, with no call to the server.
//!
//! Run with `cargo bench -p mayfly-agent --bench fetch_jwt_svid`. `MAYFLY_BENCH_CALLS` sets the
//! number of measured calls (default 5,000). The calls are sequential on one connection, so each
//! latency is one request alone. The client runs in the same process as the agent and the server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestServer, client, request, socket_path, start_agent};
use mayfly_agent::proto::JwtsvidRequest;

const CONFIG: &str = r#"
trust_providers:
  - {name: local, kind: unix}
client_workloads:
  - name: bench
    identities:
      - {trust_provider: local, match: {uid: "${UID}", agent: bench-1}}
server_workloads:
  - {name: payments, host: payments.example, port: 443}
credential_providers:
  - {name: payments-jwt, kind: jwt_svid, audience: [payments], ttl: 1h}
access_policies:
  - {name: bench-payments, client_workload: bench, server_workload: payments, credential_provider: payments-jwt, trust_providers: [local]}
"#;

fn main() {
    let calls: usize = std::env::var("MAYFLY_BENCH_CALLS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5_000);
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    println!("machine: {threads} cores; {calls} sequential calls");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = TestServer::start().await;
        server.apply(CONFIG).await;
        let dir = tempfile::tempdir().unwrap();
        let agent = start_agent(
            &server.base,
            dir.path(),
            Some(server.join_token("bench-1").await),
        )
        .await;
        let mut api = client(&socket_path(dir.path())).await;
        let svid_request = || {
            request(JwtsvidRequest {
                audience: vec!["payments".to_string()],
                spiffe_id: String::new(),
            })
        };

        // The first call fills the cache; the warm-up calls settle connections and allocations.
        let first = api
            .fetch_jwtsvid(svid_request())
            .await
            .unwrap()
            .into_inner();
        for _ in 0..200 {
            api.fetch_jwtsvid(svid_request()).await.unwrap();
        }

        let mut latencies = Vec::with_capacity(calls);
        let started = Instant::now();
        for _ in 0..calls {
            let call_started = Instant::now();
            let response = api
                .fetch_jwtsvid(svid_request())
                .await
                .unwrap()
                .into_inner();
            latencies.push(call_started.elapsed());
            assert_eq!(
                response.svids[0].svid, first.svids[0].svid,
                "every call is a cache hit"
            );
        }
        let elapsed = started.elapsed();
        assert_eq!(agent.cache.len(), 1);

        latencies.sort_unstable();
        let percentile = |fraction: f64| {
            let index = ((latencies.len() as f64 * fraction) as usize).min(latencies.len() - 1);
            latencies[index]
        };
        let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
        println!(
            "cached FetchJWTSVID: {:.0} calls/s; latency p50 {:.0} us, p99 {:.0} us, max {:.0} us",
            calls as f64 / elapsed.as_secs_f64(),
            micros(percentile(0.50)),
            micros(percentile(0.99)),
            micros(latencies[latencies.len() - 1]),
        );
    });
}
