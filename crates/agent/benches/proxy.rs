//! Proxy overhead per request, in three cases against a local HTTP server. Requests go directly,
//! through the agent's proxy to a pass-through destination, or through the proxy to a server
//! workload. In the last case the proxy injects a cached JWT-SVID and spools an injection event
//! for each request.
//!
//! Run with `cargo bench -p mayfly-agent --bench proxy`. `MAYFLY_BENCH_SECONDS` sets the
//! duration of each case (default 5). Each case sends one request at a time on one keep-alive
//! connection, so the latency is the overhead for a single client. The server, the agent, the
//! destination and the client share one process and the machine's cores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mayfly_agent::AgentSettings;
use mayfly_agent::proxy::ProxySettings;
use mayfly_server::settings::Settings;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let seconds = std::env::var("MAYFLY_BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    println!("machine: {threads} cores; {seconds} s per case; one request in flight");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(Duration::from_secs(seconds)));
}

async fn run(duration: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let injected_origin = start_origin().await;
    let plain_origin = start_origin().await;

    let settings = Settings {
        dev: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("server"),
        ..Settings::default()
    };
    let server = mayfly_server::start(settings, None).await.unwrap();
    let base = format!("http://{}", server.addr);
    let admin = server.first_admin_token.clone().unwrap();
    let http = reqwest::Client::new();
    let uid = rustix::process::getuid().as_raw();
    let yaml = format!(
        "trust_providers:\n  - {{name: local, kind: unix}}\n\
         client_workloads:\n  - name: bench\n    identities:\n      - {{trust_provider: local, match: {{uid: \"{uid}\", agent: bench-1}}}}\n\
         server_workloads:\n  - {{name: origin, host: 127.0.0.1, port: {}, scheme: http}}\n\
         credential_providers:\n  - {{name: origin-svid, kind: jwt_svid, audience: [origin], ttl: 1h}}\n\
         access_policies:\n  - {{name: bench-origin, client_workload: bench, server_workload: origin, credential_provider: origin-svid, trust_providers: [local]}}\n",
        injected_origin.port()
    );
    let config = mayfly_domain::config_file::parse("bench.yaml", &yaml).unwrap();
    let applied = http
        .post(format!("{base}/v1/apply"))
        .bearer_auth(&admin)
        .json(&json!({"config": config}))
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), 200, "{}", applied.text().await.unwrap());
    let token: serde_json::Value = http
        .post(format!("{base}/v1/agent-tokens"))
        .bearer_auth(&admin)
        .json(&json!({"agent": "bench-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let data_dir = dir.path().join("agent");
    let mut agent_settings =
        AgentSettings::new(base, data_dir.clone(), dir.path().join("agent.sock"));
    agent_settings.join_token = Some(mayfly_crypto::token::SecretString::new(
        token["token"].as_str().unwrap().to_string(),
    ));
    agent_settings.proxy = Some(ProxySettings::new(
        "127.0.0.1:0".parse().unwrap(),
        &data_dir,
    ));
    let agent = mayfly_agent::start(agent_settings).await.unwrap();
    let proxy = agent.proxy.as_ref().unwrap().address;

    let direct = measure(plain_origin, plain_origin, false, duration).await;
    direct.print("direct to the destination");
    let passed = measure(proxy, plain_origin, true, duration).await;
    passed.print("through the proxy, pass-through destination");
    let injected = measure(proxy, injected_origin, true, duration).await;
    injected.print("through the proxy, server workload, cached JWT-SVID injected");
    println!(
        "overhead per request (p50): pass-through {:.3} ms, injection {:.3} ms",
        passed.p50_ms() - direct.p50_ms(),
        injected.p50_ms() - direct.p50_ms()
    );
    agent.shutdown();
}

/// Starts an HTTP/1.1 server on 127.0.0.1 that returns a short body for every request.
async fn start_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

struct Latencies {
    micros: Vec<u64>,
    seconds: f64,
}

impl Latencies {
    fn percentile_ms(&self, fraction: f64) -> f64 {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 * fraction) as usize).min(sorted.len().saturating_sub(1));
        sorted.get(index).copied().unwrap_or(0) as f64 / 1000.0
    }

    fn p50_ms(&self) -> f64 {
        self.percentile_ms(0.5)
    }

    fn print(&self, label: &str) {
        println!(
            "{label}: {:.0} requests/s ({} in {:.1} s); latency p50 {:.3} ms, p99 {:.3} ms",
            self.micros.len() as f64 / self.seconds,
            self.micros.len(),
            self.seconds,
            self.p50_ms(),
            self.percentile_ms(0.99)
        );
    }
}

/// Sends GET requests one at a time on one connection to `connect_to` for `duration`. With
/// `absolute`, the requests are in absolute form for `destination`, as proxy clients send them.
async fn measure(
    connect_to: SocketAddr,
    destination: SocketAddr,
    absolute: bool,
    duration: Duration,
) -> Latencies {
    let stream = TcpStream::connect(connect_to).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let uri = if absolute {
        format!("http://{destination}/bench")
    } else {
        "/bench".to_string()
    };

    // The first request fills the proxy's credential cache and is not counted.
    let mut micros = Vec::new();
    let started = Instant::now();
    let mut first = true;
    while started.elapsed() < duration {
        let request = Request::get(&uri)
            .header("host", destination.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let sent = Instant::now();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
        if !first {
            micros.push(sent.elapsed().as_micros() as u64);
        }
        first = false;
    }
    Latencies {
        micros,
        seconds: started.elapsed().as_secs_f64(),
    }
}
