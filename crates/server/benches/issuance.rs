//! Credential issuance throughput over HTTP with durable audit, next to the raw ES256 signing and
//! verification rates of the same machine.
//!
//! Run with `cargo bench -p mayfly-server --bench issuance`. Settings through the environment:
//! `MAYFLY_BENCH_SECONDS` (per case, default 10) and `MAYFLY_BENCH_CONCURRENCY` (requests in
//! flight, default 64). The load generator runs in the same process as the server, so both share
//! the machine's cores, as they would with any local load generator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mayfly_crypto::jwk::VerifyingKey;
use mayfly_crypto::jws::JwsAlgorithm;
use mayfly_crypto::signing::{Algorithm, SigningKey};
use mayfly_server::settings::Settings;
use serde_json::{Value, json};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = env_number("MAYFLY_BENCH_SECONDS", 10);
    let concurrency = env_number("MAYFLY_BENCH_CONCURRENCY", 64) as usize;
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    println!("machine: {threads} cores; {seconds} s per case; {concurrency} requests in flight");

    // MAYFLY_BENCH_CASE=repeated, =fresh or =healthz runs only that case, for profiling.
    let only = std::env::var("MAYFLY_BENCH_CASE").ok();
    if let Some(case) = only.as_deref() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let bench = BenchServer::start().await;
            let evidence = match case {
                "fresh" => Evidence::Fresh,
                "healthz" => Evidence::Healthz,
                _ => Evidence::Repeated,
            };
            bench
                .run(evidence, Duration::from_secs(seconds), concurrency)
                .await
                .print(case);
        });
        return;
    }

    let (sign_one, verify_one) = raw_rates(Duration::from_secs(seconds.min(5)));
    let sign_all = raw_sign_all_cores(threads, Duration::from_secs(seconds.min(5)));
    println!("raw ES256 sign, one thread:      {sign_one:>9.0} /s");
    println!("raw ES256 sign, {threads} threads:       {sign_all:>9.0} /s");
    println!("raw ES256 verify, one thread:    {verify_one:>9.0} /s");
    let fresh_bound = 1.0 / (1.0 / sign_one + 1.0 / verify_one);
    println!("one verify + one sign, one core: {fresh_bound:>9.0} /s");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bench = BenchServer::start().await;
        if std::env::var("MAYFLY_BENCH_HEALTHZ").is_ok() {
            let healthz = bench
                .run(Evidence::Healthz, Duration::from_secs(seconds), concurrency)
                .await;
            healthz.print("GET /healthz (HTTP stack and load generator only)");
        }
        let repeated = bench
            .run(
                Evidence::Repeated,
                Duration::from_secs(seconds),
                concurrency,
            )
            .await;
        repeated.print("repeated evidence (verified-evidence cache)");
        println!("  target: half of {sign_all:.0} = {:.0} /s", sign_all / 2.0);
        let fresh = bench
            .run(Evidence::Fresh, Duration::from_secs(seconds), concurrency)
            .await;
        fresh.print("fresh evidence (verify + sign per request)");
        println!(
            "  target: half of {fresh_bound:.0} = {:.0} /s",
            fresh_bound / 2.0
        );
        bench.check_audit().await;
    });
}

fn raw_rates(duration: Duration) -> (f64, f64) {
    let key = SigningKey::generate(Algorithm::ES256, "bench").unwrap();
    let claims = json!({"sub": "spiffe://mayfly.local/bench", "aud": ["api"], "exp": 1_900_000_000, "iat": 1_800_000_000, "iss": "http://127.0.0.1:8750", "jti": "abcdefghijklmnop"});
    let started = Instant::now();
    let mut signed = 0u64;
    let mut token = String::new();
    while started.elapsed() < duration {
        token = key.sign_compact(&claims).unwrap();
        signed += 1;
    }
    let sign_rate = signed as f64 / started.elapsed().as_secs_f64();

    let verifying: VerifyingKey = key.verifying_key().unwrap();
    let (message, signature) = token.rsplit_once('.').unwrap();
    use base64::Engine;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    let started = Instant::now();
    let mut verified = 0u64;
    while started.elapsed() < duration {
        assert!(verifying.verify(JwsAlgorithm::ES256, message.as_bytes(), &signature));
        verified += 1;
    }
    (sign_rate, verified as f64 / started.elapsed().as_secs_f64())
}

fn raw_sign_all_cores(threads: usize, duration: Duration) -> f64 {
    let total = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let total = total.clone();
            std::thread::spawn(move || {
                let key = SigningKey::generate(Algorithm::ES256, "bench").unwrap();
                let claims = json!({"sub": "spiffe://mayfly.local/bench", "aud": ["api"], "exp": 1_900_000_000});
                let started = Instant::now();
                let mut count = 0u64;
                while started.elapsed() < duration {
                    key.sign_compact(&claims).unwrap();
                    count += 1;
                }
                total.fetch_add(count, Ordering::Relaxed);
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    total.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}

#[derive(Clone, Copy, PartialEq)]
enum Evidence {
    Healthz,
    Repeated,
    Fresh,
}

struct BenchServer {
    _dir: tempfile::TempDir,
    server: mayfly_server::RunningServer,
    issuer_key: Arc<SigningKey>,
    issuer: String,
    url: String,
}

struct Outcome {
    granted: u64,
    failed: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Outcome {
    fn print(&self, label: &str) {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let percentile = |p: f64| {
            sorted
                .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        println!(
            "{label}: {:.0} credentials/s ({} granted, {} failed in {:.1} s); latency p50 {:.2} ms, p99 {:.2} ms",
            self.granted as f64 / self.seconds,
            self.granted,
            self.failed,
            self.seconds,
            percentile(0.50) as f64 / 1000.0,
            percentile(0.99) as f64 / 1000.0,
        );
    }
}

impl BenchServer {
    async fn start() -> BenchServer {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            dev: true,
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            ..Settings::default()
        };
        let server = mayfly_server::start(settings, None).await.unwrap();
        let issuer_key = Arc::new(SigningKey::generate(Algorithm::ES256, "bench-issuer").unwrap());
        let issuer = "https://ci.bench.example".to_string();
        let url = format!("http://{}", server.addr);

        let jwk = serde_json::to_value(issuer_key.public_jwk()).unwrap();
        let config = json!({
            "trust_providers": [{"name": "ci", "kind": "oidc", "issuer": issuer, "audience": "mayfly", "jwks": {"keys": [jwk]}}],
            "client_workloads": [{"name": "bench-client", "identities": [{"trust_provider": "ci", "match": {"sub": "bench"}}]}],
            "server_workloads": [{"name": "bench-api", "host": "bench-api.example", "port": 443}],
            "credential_providers": [{"name": "bench-jwt", "kind": "jwt_svid", "audience": ["bench-api"], "ttl": "5m"}],
            "access_policies": [{"name": "bench", "client_workload": "bench-client", "server_workload": "bench-api", "credential_provider": "bench-jwt", "trust_providers": ["ci"]}],
        });
        let admin = server.first_admin_token.clone().unwrap();
        let response = reqwest::Client::new()
            .post(format!("{url}/v1/apply"))
            .bearer_auth(admin)
            .json(&json!({"config": config}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap_or_default()
        );
        BenchServer {
            _dir: dir,
            server,
            issuer_key,
            issuer,
            url,
        }
    }

    fn evidence_token(&self, unique: u64) -> String {
        let now = jiff::Timestamp::now().as_second();
        let claims = json!({"iss": self.issuer, "sub": "bench", "aud": "mayfly", "iat": now, "exp": now + 3600, "jti": format!("bench-{unique}")});
        self.issuer_key.sign_compact(&claims).unwrap()
    }

    async fn run(&self, evidence: Evidence, duration: Duration, concurrency: usize) -> Outcome {
        // Fresh tokens are minted before the clock starts, so the load generator does not spend
        // the measured time signing them.
        let estimate = (duration.as_secs() as usize + 1) * 30_000;
        let tokens: Arc<Vec<String>> = Arc::new(match evidence {
            Evidence::Repeated | Evidence::Healthz => vec![self.evidence_token(0)],
            Evidence::Fresh => (1..=estimate as u64)
                .map(|i| self.evidence_token(i))
                .collect(),
        });
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap();
        let url = format!("{}/v1/credentials", self.url);
        let healthz = format!("{}/healthz", self.url);
        let body = json!({"server_workload": "bench-api"}).to_string();
        let next = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();

        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, url, healthz, body, tokens, next, stop) = (
                    client.clone(),
                    url.clone(),
                    healthz.clone(),
                    body.clone(),
                    tokens.clone(),
                    next.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let (mut granted, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(token) = tokens.get(if tokens.len() == 1 { 0 } else { index })
                        else {
                            break;
                        };
                        let sent = Instant::now();
                        let request = if evidence == Evidence::Healthz {
                            client.get(&healthz)
                        } else {
                            client.post(&url)
                        };
                        let response = request
                            .bearer_auth(token)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        match response {
                            Ok(response) if response.status().is_success() => {
                                let _ = response.bytes().await;
                                granted += 1;
                                latencies.push(sent.elapsed().as_micros() as u64);
                            }
                            _ => failed += 1,
                        }
                    }
                    (granted, failed, latencies)
                })
            })
            .collect();

        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        let mut outcome = Outcome {
            granted: 0,
            failed: 0,
            seconds: 0.0,
            latencies_us: Vec::new(),
        };
        for worker in workers {
            let (granted, failed, latencies) = worker.await.unwrap();
            outcome.granted += granted;
            outcome.failed += failed;
            outcome.latencies_us.extend(latencies);
        }
        outcome.seconds = started.elapsed().as_secs_f64();
        outcome
    }

    /// Confirms that every granted credential has its audit event and the chain verifies.
    async fn check_audit(&self) {
        let report = mayfly_server::audit_log::verify(
            self.server.state.store.as_ref(),
            &self.server.state.keys,
        )
        .await
        .unwrap();
        let value: Value = serde_json::to_value(&report).unwrap();
        println!(
            "audit: {} events, chain ok: {}",
            value["events_checked"], value["ok"]
        );
    }
}
