use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

fn client(address: &str) -> ApiClient {
    let client = ApiClient::new(address, None, Some(Secret::new("admin-secret".to_string())));
    assert!(client.is_ok(), "{client:?}");
    client.unwrap()
}

/// Serves one HTTP/1.1 request on 127.0.0.1 with `response`, and returns the request's head.
async fn serve_once(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !request.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            if read == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..read]);
        }
        stream.write_all(response.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        String::from_utf8_lossy(&request).to_string()
    });
    (address, task)
}

#[test]
fn url_appends_segments_to_base_path() {
    let client = client("https://mayfly.example/prefix/");
    let url = client
        .url(&["v1", "server-workloads", "payments-api"])
        .unwrap();
    assert_eq!(
        url.as_str(),
        "https://mayfly.example/prefix/v1/server-workloads/payments-api"
    );
}

#[test]
fn name_with_slash_cannot_escape_resource_path() {
    let client = client("http://127.0.0.1:8750");
    let url = client
        .url(&["v1", "server-workloads", "../admin-tokens/root?x=1#y"])
        .unwrap();
    assert_eq!(
        url.path(),
        "/v1/server-workloads/..%2Fadmin-tokens%2Froot%3Fx=1%23y"
    );
    assert_eq!(url.query(), None);
}

#[test]
fn dot_segments_are_rejected() {
    let client = client("http://127.0.0.1:8750");
    for name in ["..", ".", ""] {
        let result = client.url(&["v1", "server-workloads", name]);
        assert!(
            matches!(result, Err(ApiError::InvalidPathSegment { .. })),
            "{name:?} was accepted"
        );
    }
}

#[test]
fn percent_in_name_is_encoded() {
    let client = client("http://127.0.0.1:8750");
    let url = client.url(&["v1", "keys", "%2e%2e"]).unwrap();
    assert_eq!(url.path(), "/v1/keys/%252e%252e");
}

#[test]
fn address_must_be_http_url() {
    for address in [
        "127.0.0.1:8750",
        "ftp://host",
        "unix:///tmp/sock",
        "http://host/?q=1",
        "",
    ] {
        let result = ApiClient::new(address, None, None);
        assert!(
            matches!(result, Err(ApiError::InvalidAddress { .. })),
            "{address:?} was accepted"
        );
    }
}

#[test]
fn missing_ca_file_names_path() {
    let result = ApiClient::new(
        "https://127.0.0.1:8750",
        Some(Path::new("/nonexistent/ca.pem")),
        None,
    );
    let message = result
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(message.contains("/nonexistent/ca.pem"), "{message}");
}

#[test]
fn ca_file_without_certificate_is_rejected() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "not a certificate\n").unwrap();
    let result = ApiClient::new("https://127.0.0.1:8750", Some(file.path()), None);
    assert!(matches!(result, Err(ApiError::CaFile { .. })), "{result:?}");
}

#[tokio::test]
async fn get_sends_bearer_token_and_query() {
    let body = r#"{"items":[]}"#;
    let response: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let (address, server) = serve_once(response).await;

    let value = client(&address)
        .get(&["v1", "audit", "events"], &[("limit", "5".to_string())])
        .await;
    let request = server.await.unwrap();

    assert_eq!(value.ok(), Some(serde_json::json!({"items": []})));
    assert!(
        request.starts_with("GET /v1/audit/events?limit=5 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer admin-secret\r\n"),
        "{request}"
    );
}

#[tokio::test]
async fn problem_response_becomes_problem_error() {
    let body = r#"{"title":"Not Found","status":404,"detail":"server_workload \"x\" not found","request_id":"r1"}"#;
    let response: &'static str = Box::leak(
        format!("HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
            .into_boxed_str(),
    );
    let (address, server) = serve_once(response).await;

    let result = client(&address)
        .get(&["v1", "server-workloads", "x"], &[])
        .await;
    server.await.unwrap();

    let Err(ApiError::Problem { status, problem }) = result else {
        panic!("expected a problem, got {result:?}");
    };
    assert_eq!(status, 404);
    assert_eq!(problem.request_id.as_deref(), Some("r1"));
}

#[tokio::test]
async fn refused_connection_names_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let result = client(&address).get(&["v1", "keys"], &[]).await;

    let Err(error @ ApiError::Connect { .. }) = result else {
        panic!("expected a connection error, got {result:?}");
    };
    let message = error.to_string();
    assert!(message.contains(&address), "{message}");
    assert!(message.contains("MAYFLY_ADDR"), "{message}");
}
