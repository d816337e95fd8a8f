//! HTTP/1 requests over the server's workload socket, where the server attests the caller from
//! the kernel's peer credentials instead of a token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use super::RawResponse;

/// Time allowed for connecting, sending and reading the whole response.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read from the socket, in bytes.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A failed request over the workload socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The socket could not be opened.
    #[error(
        "cannot connect to the workload socket {path}: {source}; check that the server is running, or set --socket or MAYFLY_SOCKET"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The HTTP exchange failed after connecting.
    #[error("request over the workload socket {path} failed: {reason}")]
    Http { path: PathBuf, reason: String },
    /// The response body exceeded the limit.
    #[error("response over the workload socket {path} exceeds {limit} bytes")]
    TooLarge { path: PathBuf, limit: usize },
    /// The exchange took too long.
    #[error("request over the workload socket {path} timed out after {seconds}s")]
    Timeout { path: PathBuf, seconds: u64 },
}

/// Sends `POST <path>` with a JSON body over the Unix socket at `socket` and returns the raw
/// response. The `Host` header is `localhost`, since a socket has no host name.
pub async fn post_json(
    socket: &Path,
    path: &str,
    body: &Value,
) -> Result<RawResponse, SocketError> {
    let exchange = exchange(socket, path, body);
    match tokio::time::timeout(SOCKET_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(SocketError::Timeout {
            path: socket.to_path_buf(),
            seconds: SOCKET_TIMEOUT.as_secs(),
        }),
    }
}

async fn exchange(socket: &Path, path: &str, body: &Value) -> Result<RawResponse, SocketError> {
    let http_error = |reason: String| SocketError::Http {
        path: socket.to_path_buf(),
        reason,
    };

    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| SocketError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| http_error(error.to_string()))?;
    let connection_task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "workload socket connection closed with an error");
        }
    });

    let request = hyper::Request::post(path)
        .header(HOST, "localhost")
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|error| http_error(error.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| http_error(error.to_string()))?;

    let status = response.status().as_u16();
    let request_id = super::request_id_header(response.headers());
    let collected = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await;
    connection_task.abort();
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(SocketError::TooLarge {
                path: socket.to_path_buf(),
                limit: MAX_RESPONSE_BYTES,
            });
        }
        Err(error) => return Err(http_error(error.to_string())),
    };
    Ok(RawResponse {
        status,
        request_id,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    use super::*;

    /// Serves one request on a socket in a temporary directory and returns the request text.
    async fn serve_once(
        directory: &Path,
        response: String,
    ) -> (PathBuf, tokio::task::JoinHandle<String>) {
        let socket = directory.join("workload.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let read = stream.read(&mut buffer).await.unwrap();
                request.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&request);
                if read == 0 || text.contains("\r\n\r\n{") && text.ends_with('}') {
                    break;
                }
            }
            stream.write_all(response.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (socket, task)
    }

    fn http_response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn post_sends_json_with_localhost_host() {
        let directory = tempfile::tempdir().unwrap();
        let reply = r#"{"credential_type":"jwt_svid","token":"a.b.c"}"#;
        let (socket, server) = serve_once(directory.path(), http_response("200 OK", reply)).await;

        let body = serde_json::json!({"server_workload": "demo-api"});
        let response = post_json(&socket, "/v1/credentials", &body).await.unwrap();
        let request = server.await.unwrap();

        assert_eq!(response.status, 200);
        assert_eq!(response.body, reply.as_bytes());
        let lowercase = request.to_ascii_lowercase();
        assert!(
            request.starts_with("POST /v1/credentials HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(lowercase.contains("host: localhost\r\n"), "{request}");
        assert!(!lowercase.contains("authorization:"), "{request}");
        assert!(
            request.ends_with(r#"{"server_workload":"demo-api"}"#),
            "{request}"
        );
    }

    #[tokio::test]
    async fn error_status_is_returned_raw() {
        let directory = tempfile::tempdir().unwrap();
        let reply = r#"{"title":"Forbidden","status":403,"step":"access_policy","request_id":"r"}"#;
        let (socket, server) =
            serve_once(directory.path(), http_response("403 Forbidden", reply)).await;

        let response = post_json(&socket, "/v1/credentials", &serde_json::json!({}))
            .await
            .unwrap();
        server.await.unwrap();

        assert_eq!(response.status, 403);
    }

    #[tokio::test]
    async fn missing_socket_names_path() {
        let directory = tempfile::tempdir().unwrap();
        let socket = directory.path().join("absent.sock");

        let result = post_json(&socket, "/v1/credentials", &serde_json::json!({})).await;

        let message = result
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("absent.sock"), "{message}");
        assert!(message.contains("MAYFLY_SOCKET"), "{message}");
    }
}
