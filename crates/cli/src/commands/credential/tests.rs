use super::*;

fn reply() -> Value {
    json!({
        "credential_type": "jwt_svid",
        "token": "eyJhbGciOiJFUzI1NiJ9.e30.sig",
        "spiffe_id": "spiffe://mayfly.local/demo-client",
        "expires_at": "2026-12-04T12:05:00Z",
        "presentation": {"headers": {"Authorization": "Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig"}},
        "request_id": "r-1"
    })
}

#[test]
fn body_names_server_workload() {
    assert_eq!(
        request_body(Some("demo-api"), None),
        json!({"server_workload": "demo-api"})
    );
}

#[test]
fn body_carries_target() {
    let target = Target {
        host: "demo-api.local".to_string(),
        port: 8443,
    };
    assert_eq!(
        request_body(None, Some(&target)),
        json!({"target": {"host": "demo-api.local", "port": 8443}})
    );
}

#[test]
fn token_output_is_bare_token() {
    let text = render_credential(&reply(), CredentialOutput::Token).unwrap();
    assert_eq!(text, "eyJhbGciOiJFUzI1NiJ9.e30.sig");
}

#[test]
fn header_output_prints_name_value_lines() {
    let text = render_credential(&reply(), CredentialOutput::Header).unwrap();
    assert_eq!(text, "Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig");
}

#[test]
fn header_output_prints_query_parameters() {
    let reply = json!({"token": "t", "presentation": {"query": {"api_key": "t"}}});
    let text = render_credential(&reply, CredentialOutput::Header).unwrap();
    assert_eq!(text, "api_key=t");
}

#[test]
fn json_output_keeps_whole_reply() {
    let text = render_credential(&reply(), CredentialOutput::Json).unwrap();
    let parsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, reply());
}

#[test]
fn reply_without_token_is_an_error() {
    let result = render_credential(
        &json!({"credential_type": "jwt_svid"}),
        CredentialOutput::Token,
    );
    assert!(
        matches!(
            result,
            Err(CredentialError::MissingField { field: "token" })
        ),
        "{result:?}"
    );
}

#[test]
fn forbidden_problem_becomes_denial() {
    let problem = Problem {
        status: Some(403),
        step: Some("server_workload_enabled".to_string()),
        request_id: Some("r-42".to_string()),
        ..Problem::default()
    };

    let error = denial_error(ApiError::Problem {
        status: 403,
        problem: Box::new(problem),
    });

    assert_eq!(
        error.to_string(),
        "denied at step server_workload_enabled (request id r-42); an admin finds the reason with `mayfly audit list --outcome failure`"
    );
    assert!(error.downcast_ref::<CredentialError>().is_some());
}

#[test]
fn other_problems_stay_api_errors() {
    let problem = Problem {
        detail: Some("invalid body".to_string()),
        ..Problem::default()
    };

    let error = denial_error(ApiError::Problem {
        status: 400,
        problem: Box::new(problem),
    });

    assert!(error.downcast_ref::<ApiError>().is_some());
}

#[test]
fn token_file_is_trimmed() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "  header.payload.signature\n").unwrap();

    let token = read_token_file(file.path()).unwrap();

    assert_eq!(token.expose(), "header.payload.signature");
}

#[test]
fn header_injection_in_token_file_is_rejected() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "a.b.c\r\nX-Injected: yes\n").unwrap();

    let result = read_token_file(file.path());

    assert!(
        matches!(result, Err(CredentialError::InvalidTokenFile { .. })),
        "{result:?}"
    );
}

#[test]
fn empty_token_file_is_rejected() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "\n").unwrap();

    let result = read_token_file(file.path());

    assert!(
        matches!(result, Err(CredentialError::EmptyTokenFile { .. })),
        "{result:?}"
    );
}

fn aws_reply() -> Value {
    json!({
        "credential_type": "aws_credentials",
        "token": "session",
        "presentation": {"environment": {
            "AWS_ACCESS_KEY_ID": "ASIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "se'cret",
            "AWS_SESSION_TOKEN": "session"
        }}
    })
}

#[test]
fn env_output_exports_aws_variables() {
    let text = render_credential(&aws_reply(), CredentialOutput::Env).unwrap();
    assert_eq!(
        text,
        "export AWS_ACCESS_KEY_ID='ASIAEXAMPLE'\n\
         export AWS_SECRET_ACCESS_KEY='se'\\''cret'\n\
         export AWS_SESSION_TOKEN='session'"
    );
}

#[test]
fn header_output_points_aws_to_env() {
    let result = render_credential(&aws_reply(), CredentialOutput::Header);
    let message = result.unwrap_err().to_string();
    assert!(message.contains("use -o env"), "{message}");
}

#[test]
fn env_output_points_headers_to_header() {
    let result = render_credential(&reply(), CredentialOutput::Env);
    let message = result.unwrap_err().to_string();
    assert!(message.contains("use -o header"), "{message}");
}

#[test]
fn env_output_rejects_odd_variable() {
    let reply = json!({"presentation": {"environment": {"A; rm -rf /": "x"}}});
    let result = render_credential(&reply, CredentialOutput::Env);
    assert!(
        matches!(result, Err(CredentialError::InvalidVariable { .. })),
        "{result:?}"
    );
}
