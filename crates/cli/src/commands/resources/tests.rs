use serde_json::json;

use super::*;

#[test]
fn kind_accepts_every_spelling() {
    let spellings = [
        "server-workloads",
        "server_workloads",
        "server-workload",
        "server_workload",
        " server-workloads ",
    ];
    for text in spellings {
        assert_eq!(
            parse_kind(text),
            Ok(ResourceKind::ServerWorkload),
            "{text:?}"
        );
    }
    assert_eq!(
        parse_kind("access-policies"),
        Ok(ResourceKind::AccessPolicy)
    );
    assert_eq!(parse_kind("access_policy"), Ok(ResourceKind::AccessPolicy));
    assert_eq!(
        parse_kind("trust-provider"),
        Ok(ResourceKind::TrustProvider)
    );
}

#[test]
fn unknown_kind_lists_valid_kinds() {
    let error = parse_kind("workloads").err();
    let message = error.map(|error| error.to_string()).unwrap_or_default();
    assert!(message.contains("\"workloads\""), "{message}");
    assert!(message.contains("client-workloads"), "{message}");
}

#[test]
fn yaml_form_of_api_resources_applies_again() {
    let items = vec![
        json!({"name": "payments-api", "host": "payments.internal.example", "port": 443, "scheme": "https",
               "authentication": {"method": "bearer"}, "enabled": false,
               "created_at": "2026-12-04T10:00:00Z", "updated_at": "2026-12-04T11:00:00Z"}),
    ];

    let file = config_file_form(ResourceKind::ServerWorkload, &items).unwrap();
    let yaml = serde_yaml_ng::to_string(&file).unwrap();
    let parsed = mayfly_domain::config_file::parse("get.yaml", &yaml);

    assert!(
        yaml.starts_with("server_workloads:\n- name: payments-api\n"),
        "{yaml}"
    );
    assert!(!yaml.contains("enabled"), "{yaml}");
    assert!(parsed.is_ok(), "{parsed:?}\n{yaml}");
    let parsed = parsed.unwrap();
    assert_eq!(parsed.server_workloads.len(), 1);
    assert_eq!(parsed.server_workloads[0].port, 443);
}

#[test]
fn yaml_form_of_log_stream_drops_status() {
    let items = vec![json!({
        "name": "siem", "kind": "http_hec", "format": "ocsf", "url": "https://hec.example:8088/services/collector",
        "secret": "(redacted)", "created_at": "2026-12-04T10:00:00Z", "updated_at": "2026-12-04T11:00:00Z",
        "status": {"state": "caught_up", "lag": 0, "delivered_seq": 12},
    })];

    let file = config_file_form(ResourceKind::LogStream, &items).unwrap();
    let yaml = serde_yaml_ng::to_string(&file).unwrap();
    let parsed = mayfly_domain::config_file::parse("get.yaml", &yaml);

    assert!(
        yaml.starts_with("log_streams:\n- name: siem\n  kind: http_hec\n"),
        "{yaml}"
    );
    assert!(!yaml.contains("status"), "{yaml}");
    assert!(parsed.is_ok(), "{parsed:?}\n{yaml}");
}

#[test]
fn log_stream_row_shows_state_and_lag() {
    let items = vec![json!({
        "name": "siem", "kind": "syslog", "format": "cef", "address": "10.0.0.5:6514", "transport": "tls",
        "ca_file": "/etc/mayfly/siem-ca.pem", "updated_at": "2026-12-04T11:00:00Z",
        "status": {"state": "failing", "lag": 42},
    })];
    let rendered = resource_table(ResourceKind::LogStream, &items).render();

    assert!(rendered.contains("STATE"), "{rendered}");
    assert!(rendered.contains("tls://10.0.0.5:6514"), "{rendered}");
    assert!(rendered.contains("failing"), "{rendered}");
    assert!(rendered.contains("42"), "{rendered}");
}

#[test]
fn server_workload_row_shows_target_and_enabled() {
    let items = vec![
        json!({"name": "api", "host": "api.local", "port": 8443, "scheme": "https",
        "authentication": {"method": "header", "header": "X-Api-Key"}, "enabled": true,
        "updated_at": "2026-12-04T11:00:00.5Z"}),
    ];

    let rendered = resource_table(ResourceKind::ServerWorkload, &items).render();
    let row = rendered.lines().nth(1).unwrap_or_default();

    assert!(rendered.starts_with("NAME"), "{rendered}");
    assert!(row.contains("https://api.local:8443"), "{row}");
    assert!(row.contains("header X-Api-Key"), "{row}");
    assert!(row.contains("true"), "{row}");
    assert!(row.ends_with("2026-12-04T11:00:00Z"), "{row}");
}

#[test]
fn policy_row_shows_client_to_server() {
    let items = vec![
        json!({"name": "a-to-b", "client_workload": "a", "server_workload": "b",
        "credential_provider": "jwt", "trust_providers": ["local"]}),
    ];

    let rendered = resource_table(ResourceKind::AccessPolicy, &items).render();

    assert!(rendered.contains("a -> b"), "{rendered}");
    assert!(rendered.contains("jwt"), "{rendered}");
}

#[test]
fn condition_rows_summarize_rules() {
    let items = vec![
        json!({"name": "office", "kind": "source_ip", "allow": ["10.0.0.0/8", "127.0.0.0/8"]}),
        json!({"name": "hours", "kind": "time_window", "timezone": "Europe/Berlin",
               "schedule": [{"days": ["mon", "fri"], "start": "08:00", "end": "18:00"}]}),
    ];

    let rendered = resource_table(ResourceKind::AccessCondition, &items).render();

    assert!(rendered.contains("10.0.0.0/8, 127.0.0.0/8"), "{rendered}");
    assert!(
        rendered.contains("Europe/Berlin: mon, fri 08:00-18:00"),
        "{rendered}"
    );
}

#[test]
fn credential_provider_row_shows_audience_and_ttl() {
    let items =
        vec![json!({"name": "jwt", "kind": "jwt_svid", "audience": ["a", "b"], "ttl": "5m"})];

    let rendered = resource_table(ResourceKind::CredentialProvider, &items).render();
    let row = rendered.lines().nth(1).unwrap_or_default();

    assert!(row.contains("jwt_svid"), "{row}");
    assert!(row.contains("a, b"), "{row}");
    assert!(row.contains("5m"), "{row}");
}

#[test]
fn static_secret_row_shows_age() {
    let items = vec![json!({
        "name": "legacy-key",
        "kind": "static_secret",
        "credential_type": "api_key",
        "typical_lifetime": {"kind": "until_rotated"},
        "value": {"set": true, "fingerprint": "hmac-sha256:00", "age": "400d"},
    })];

    let rendered = resource_table(ResourceKind::CredentialProvider, &items).render();
    let row = rendered.lines().nth(1).unwrap_or_default();

    assert!(row.contains("api_key"), "{row}");
    assert!(row.contains("until rotated (set 400d ago)"), "{row}");
}

#[test]
fn oauth_row_shows_token_url() {
    let items = vec![json!({
        "name": "reports-oauth",
        "kind": "oauth_client_credentials",
        "credential_type": "access_token",
        "typical_lifetime": {"kind": "set_by_target"},
        "token_url": "https://login.example/token",
    })];

    let rendered = resource_table(ResourceKind::CredentialProvider, &items).render();
    let row = rendered.lines().nth(1).unwrap_or_default();

    assert!(row.contains("set by target"), "{row}");
    assert!(row.contains("https://login.example/token"), "{row}");
}

#[test]
fn yaml_form_drops_described_secret_and_server_fields() {
    let items = vec![json!({
        "name": "legacy-key",
        "kind": "static_secret",
        "credential_type": "api_key",
        "typical_lifetime": {"kind": "until_rotated"},
        "value": {"set": true, "fingerprint": "hmac-sha256:00", "age": "400d"},
        "allow_workload_delivery": true,
    })];

    let file = config_file_form(ResourceKind::CredentialProvider, &items).unwrap();
    let text = serde_yaml_ng::to_string(&file).unwrap();

    assert!(!text.contains("value"), "{text}");
    assert!(!text.contains("credential_type"), "{text}");
    assert!(!text.contains("typical_lifetime"), "{text}");
    assert!(text.contains("allow_workload_delivery: true"), "{text}");
}

#[test]
fn geo_condition_row_lists_countries_and_subdivisions() {
    let items = vec![
        json!({"name": "eu", "kind": "geo", "allow_countries": ["DE", "FR"]}),
        json!({"name": "bavaria", "kind": "geo", "allow_countries": ["DE"], "allow_subdivisions": ["DE-BY", "DE-BE"]}),
    ];

    let rendered = resource_table(ResourceKind::AccessCondition, &items).render();
    let rows: Vec<&str> = rendered.lines().collect();

    assert!(rows[1].contains("countries DE, FR"), "{rendered}");
    assert!(
        rows[2].contains("countries DE; subdivisions DE-BY, DE-BE"),
        "{rendered}"
    );
}

#[test]
fn location_rule_row_lists_allowlists_and_targets() {
    let items = vec![
        json!({"name": "where", "kind": "unexpected_location", "allow_networks": ["10.0.0.0/8"],
               "allow_countries": ["DE", "FR"], "notify": ["pager", "chat"]}),
        json!({"name": "nets", "kind": "unexpected_location", "allow_networks": ["192.0.2.0/24"]}),
    ];

    let rendered = resource_table(ResourceKind::AlertRule, &items).render();
    let rows: Vec<&str> = rendered.lines().collect();

    assert!(rows[0].contains("NOTIFY"), "{rendered}");
    assert!(
        rows[1].contains("requests from outside networks 10.0.0.0/8 and countries DE, FR"),
        "{rendered}"
    );
    assert!(rows[1].contains("pager, chat"), "{rendered}");
    assert!(
        rows[2].contains("requests from outside networks 192.0.2.0/24"),
        "{rendered}"
    );
    assert!(!rows[2].contains("countries"), "{rendered}");
}

#[test]
fn notification_target_row_shows_fingerprint_not_secret() {
    let items = vec![json!({
        "name": "pager", "kind": "webhook", "url": "https://pager.example/hook", "auth": "header",
        "header": "X-Pager-Key",
        "secret": {"set": true, "fingerprint": "hmac-sha256:0123456789abcdef0123456789abcdef", "age": "5m"},
        "status": {"state": "failing", "lag": 3},
    })];

    let rendered = resource_table(ResourceKind::NotificationTarget, &items).render();

    assert!(
        rendered.contains("header X-Pager-Key set 0123456789ab (5m ago)"),
        "{rendered}"
    );
    assert!(rendered.contains("failing"), "{rendered}");
    assert!(
        rendered.contains("https://pager.example/hook"),
        "{rendered}"
    );
}

#[test]
fn unknown_kind_lists_every_kind() {
    let message = parse_kind("widgets")
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    for kind in ResourceKind::ALL {
        assert!(message.contains(kind.path_name()), "{message}");
    }
}
