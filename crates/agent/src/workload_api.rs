//! The SPIFFE Workload API over gRPC: FetchX509SVID, FetchX509Bundles, FetchJWTSVID,
//! FetchJWTBundles and ValidateJWTSVID.
//!
//! Every request must carry the metadata `workload.spiffe.io: true`. The caller is attested from
//! the kernel's view of the connection; the server decides what it may have.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use jiff::Timestamp;
use mayfly_crypto::jwk::parse_jwk_set;
use mayfly_crypto::jwt_svid::{unverified_trust_domain, validate_jwt_svid};
use mayfly_server::evidence::unix::{ExecutableHasher, attest};
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::audience::check_audiences;
use crate::bundles::JwtBundle;
use crate::cache::{CacheKey, Lookup, SvidCache};
use crate::client::{ClientError, IssuedSvid, ServerClient};
use crate::identity::Identity;
use crate::peer::Peer;
use crate::proto::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::proto::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use crate::x509::{Renewer, X509Bundle, X509Cache, X509Svid, X509SvidError, fetch_svid};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Workload API service.
pub struct WorkloadApi {
    pub client: ServerClient,
    pub identity: Arc<Identity>,
    pub cache: Arc<SvidCache>,
    pub hasher: Arc<ExecutableHasher>,
    pub bundles: watch::Receiver<Option<JwtBundle>>,
    pub x509: Arc<X509Cache>,
    pub x509_bundles: watch::Receiver<Option<Arc<X509Bundle>>>,
}

impl WorkloadApi {
    async fn attest_caller<T>(
        &self,
        request: &Request<T>,
    ) -> Result<BTreeMap<String, Vec<String>>, Status> {
        let Some(Peer(Some(peer))) = request.extensions().get::<Peer>().copied() else {
            return Err(Status::permission_denied(
                "the caller's process credentials are unavailable",
            ));
        };
        let hasher = Arc::clone(&self.hasher);
        tokio::task::spawn_blocking(move || attest(peer, &hasher))
            .await
            .map_err(|error| Status::internal(format!("attestation task failed: {error}")))?
            .map_err(|error| Status::permission_denied(format!("attestation failed: {error}")))
    }

    async fn fetch(
        &self,
        attributes: &BTreeMap<String, Vec<String>>,
        audiences: &[String],
    ) -> Result<IssuedSvid, ClientError> {
        let (credential, _) = self.identity.credential().await;
        let issued = self
            .client
            .jwt_svid(&credential, attributes, audiences)
            .await;
        if let Err(ClientError::Unauthorized { detail, .. }) = &issued {
            self.identity
                .credential_rejected(&self.client, detail)
                .await;
        }
        issued
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = ResponseStream<X509svidResponse>;
    type FetchX509BundlesStream = ResponseStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = ResponseStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        require_header(&request)?;
        let attributes = self.attest_caller(&request).await?;
        let key = CacheKey::new(&attributes, &[]);

        let subscription = match self.x509.subscribe(&key, Timestamp::now()) {
            Some(subscription) => subscription,
            None => {
                let svid = fetch_svid(&self.client, &self.identity, &attributes)
                    .await
                    .map_err(|error| match error {
                        X509SvidError::Client(error) => status_of(error),
                        other => Status::internal(other.to_string()),
                    })?;
                self.x509.insert(key.clone(), svid, Timestamp::now())
            }
        };
        if subscription.start_renewal {
            let renewer = Renewer {
                client: self.client.clone(),
                identity: Arc::clone(&self.identity),
                cache: Arc::clone(&self.x509),
                bundles: self.x509_bundles.clone(),
            };
            tokio::spawn(renewer.run(key, attributes));
        }

        let svids = subscription.receiver.clone();
        let bundles = self.x509_bundles.clone();
        let changes = WatchStream::new(subscription.receiver)
            .map(|_| ())
            .merge(WatchStream::new(self.x509_bundles.clone()).map(|_| ()));
        let mut last_sent: Option<(Arc<X509Svid>, Option<Arc<X509Bundle>>)> = None;
        let stream = changes.filter_map(move |()| {
            let svid = svids.borrow().clone();
            let bundle = bundles.borrow().clone();
            let unchanged = last_sent.as_ref().is_some_and(|(sent_svid, sent_bundle)| {
                Arc::ptr_eq(sent_svid, &svid)
                    && sent_bundle.as_ref().map(Arc::as_ptr) == bundle.as_ref().map(Arc::as_ptr)
            });
            if unchanged {
                return None;
            }
            last_sent = Some((Arc::clone(&svid), bundle.clone()));
            Some(Ok(x509_response(&svid, bundle.as_deref())))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        require_header(&request)?;
        let stream = WatchStream::new(self.x509_bundles.clone()).filter_map(|bundle| {
            let bundle = bundle?;
            Some(Ok(X509BundlesResponse {
                crl: Vec::new(),
                bundles: [(bundle.trust_domain_id.clone(), bundle.concatenated())]
                    .into_iter()
                    .collect(),
            }))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        require_header(&request)?;
        check_audiences(&request.get_ref().audience).map_err(Status::invalid_argument)?;
        let attributes = self.attest_caller(&request).await?;
        let JwtsvidRequest {
            audience,
            spiffe_id,
        } = request.into_inner();

        let key = CacheKey::new(&attributes, &audience);
        let svid = match self.cache.lookup(&key, Timestamp::now()) {
            Lookup::Hit { svid, refresh } => {
                if refresh {
                    self.spawn_refresh(key, attributes, audience);
                }
                svid
            }
            Lookup::Miss => {
                let svid = self
                    .fetch(&attributes, &audience)
                    .await
                    .map_err(status_of)?;
                self.cache.insert(key, svid.clone(), Timestamp::now());
                svid
            }
        };

        if !spiffe_id.is_empty() && spiffe_id != svid.spiffe_id {
            return Err(Status::permission_denied(format!(
                "the caller has no identity {spiffe_id:?}"
            )));
        }
        Ok(Response::new(JwtsvidResponse {
            svids: vec![Jwtsvid {
                spiffe_id: svid.spiffe_id,
                svid: svid.token,
                hint: String::new(),
            }],
        }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        require_header(&request)?;
        let stream = WatchStream::new(self.bundles.clone()).filter_map(|bundle| {
            let bundle = bundle?;
            let bytes = serde_json::to_vec(&bundle.jwks).ok()?;
            Some(Ok(JwtBundlesResponse {
                bundles: [(bundle.trust_domain_id, bytes)].into_iter().collect(),
            }))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        require_header(&request)?;
        let ValidateJwtsvidRequest { audience, svid } = request.into_inner();
        if audience.is_empty() {
            return Err(Status::invalid_argument("audience is required"));
        }
        if svid.is_empty() {
            return Err(Status::invalid_argument("svid is required"));
        }
        let bundle = self
            .bundles
            .borrow()
            .clone()
            .ok_or_else(|| Status::unavailable("the JWT bundle has not been fetched yet"))?;
        let trust_domain = unverified_trust_domain(&svid)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        if format!("spiffe://{trust_domain}") != bundle.trust_domain_id {
            return Err(Status::invalid_argument(format!(
                "no bundle for trust domain {trust_domain}"
            )));
        }
        let (keys, _) = parse_jwk_set(&bundle.jwks);
        let validated = validate_jwt_svid(&svid, &keys, &audience, Timestamp::now().as_second())
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let claims = prost_types::Struct {
            fields: validated
                .claims
                .into_iter()
                .map(|(name, value)| (name, to_prost_value(value)))
                .collect(),
        };
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: validated.sub.to_string(),
            claims: Some(claims),
        }))
    }
}

impl WorkloadApi {
    /// Refreshes a cached SVID in the background; the caller already has the cached one.
    fn spawn_refresh(
        &self,
        key: CacheKey,
        attributes: BTreeMap<String, Vec<String>>,
        audience: Vec<String>,
    ) {
        let client = self.client.clone();
        let identity = Arc::clone(&self.identity);
        let cache = Arc::clone(&self.cache);
        tokio::spawn(async move {
            let (credential, _) = identity.credential().await;
            match client.jwt_svid(&credential, &attributes, &audience).await {
                Ok(svid) => cache.insert(key, svid, Timestamp::now()),
                Err(error) => {
                    tracing::warn!(error = %error, "refreshing a cached JWT-SVID failed; the cached one stays in use until it expires");
                    cache.refresh_failed(&key);
                }
            }
        });
    }
}

/// Builds the FetchX509SVID message: the caller's SVID with the trust domain's bundle.
fn x509_response(svid: &X509Svid, bundle: Option<&X509Bundle>) -> X509svidResponse {
    X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: svid.spiffe_id.clone(),
            x509_svid: svid.chain.concat(),
            x509_svid_key: svid.private_key_pkcs8.to_vec(),
            bundle: bundle.map(X509Bundle::concatenated).unwrap_or_default(),
            hint: String::new(),
        }],
        crl: Vec::new(),
        federated_bundles: Default::default(),
    }
}

/// Rejects requests without `workload.spiffe.io: true`, as the Workload API standard requires.
fn require_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request
        .metadata()
        .get("workload.spiffe.io")
        .and_then(|value| value.to_str().ok())
    {
        Some("true") => Ok(()),
        _ => Err(Status::invalid_argument(
            "missing metadata workload.spiffe.io: true",
        )),
    }
}

fn status_of(error: ClientError) -> Status {
    match error {
        ClientError::Denied { .. } => Status::permission_denied(
            "no access policy allows this request; the server audited the denial",
        ),
        ClientError::Unauthorized { .. } => Status::unavailable(
            "the agent is not authorized by the server: it may have been evicted",
        ),
        other => Status::unavailable(format!("the server is unavailable: {other}")),
    }
}

fn to_prost_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(flag) => Kind::BoolValue(flag),
        serde_json::Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        serde_json::Value::String(text) => Kind::StringValue(text),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_prost_value).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(prost_types::Struct {
            fields: fields
                .into_iter()
                .map(|(name, value)| (name, to_prost_value(value)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
