//! Configuration CRUD, apply, and the server workload switch.

use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::JsonRejection;
use mayfly_domain::config_file::ConfigFile;
use mayfly_domain::resources::{Resource, ResourceKind};
use mayfly_store::ResourceRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::auth::Admin;
use crate::changes::{self, Change, Request, commit_changes, redact};
use crate::problem::{ApiError, json_rejection};
use crate::{clock, secrets};

fn parse_kind(text: &str) -> Result<ResourceKind, ApiError> {
    ResourceKind::ALL
        .into_iter()
        .find(|kind| kind.path_name() == text)
        .ok_or_else(|| ApiError::NotFound {
            kind: "resource kind".to_string(),
            name: text.to_string(),
        })
}

/// Renders a stored resource with its metadata; secrets redacted.
fn render(record: &ResourceRecord, kind: ResourceKind) -> Value {
    let mut value = secrets::describe_sealed(redact(record.spec.clone()), Some(clock::now()));
    if kind == ResourceKind::CredentialProvider
        && let Ok(Resource::CredentialProvider(provider)) =
            Resource::from_json(kind, record.spec.clone())
        && let Value::Object(map) = &mut value
    {
        map.insert("credential_type".into(), json!(provider.credential_type()));
        map.insert(
            "typical_lifetime".into(),
            json!(provider.typical_lifetime()),
        );
    }
    if let Value::Object(map) = &mut value {
        map.insert("created_at".into(), json!(record.created_at.to_string()));
        map.insert("updated_at".into(), json!(record.updated_at.to_string()));
        if kind == ResourceKind::ServerWorkload {
            map.insert("enabled".into(), json!(record.enabled));
        }
    }
    value
}

pub async fn list(
    state: AppState,
    _admin: Admin,
    Path(kind): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    let records = state
        .store
        .list_resources(kind.as_str())
        .await
        .map_err(|e| ApiError::from_store(e, "list"))?;
    let mut items: Vec<Value> = records.iter().map(|record| render(record, kind)).collect();
    if kind == ResourceKind::LogStream {
        let head = chain_head(&state).await?;
        for item in &mut items {
            add_stream_status(&state, item, head);
        }
    }
    if kind == ResourceKind::NotificationTarget {
        for item in &mut items {
            add_target_status(&state, item).await?;
        }
    }
    Ok(Json(json!({"items": items})))
}

/// Returns the sequence number of the last audit event, 0 when there is none.
async fn chain_head(state: &crate::state::AppState) -> Result<i64, ApiError> {
    let head = state
        .store
        .audit_head()
        .await
        .map_err(|e| ApiError::from_store(e, "audit head"))?;
    Ok(head.map_or(0, |(seq, _)| seq))
}

/// Adds a log stream's delivery `status` (state, lag in events, last error) to its rendering.
fn add_stream_status(state: &crate::state::AppState, item: &mut Value, head: i64) {
    let Some(name) = item.get("name").and_then(Value::as_str) else {
        return;
    };
    let status = match state.streams.status(name) {
        Some(status) => {
            let mut value = json!(status);
            value["lag"] = json!((head - status.delivered_seq).max(0));
            value
        }
        None => json!({"state": "not_running", "lag": Value::Null}),
    };
    item["status"] = status;
}

/// Adds a notification target's delivery `status` (state, lag in alerts, last error) to its
/// rendering.
async fn add_target_status(
    state: &crate::state::AppState,
    item: &mut Value,
) -> Result<(), ApiError> {
    let Some(name) = item.get("name").and_then(Value::as_str).map(str::to_string) else {
        return Ok(());
    };
    let status = match state.notifications.status(&name) {
        Some(status) => {
            let pending = crate::notifications::pending_alerts(
                state.store.as_ref(),
                &name,
                status.delivered_seq,
            )
            .await
            .map_err(|e| ApiError::from_store(e, "notification target lag"))?;
            let mut value = json!(status);
            value["lag"] = json!(pending);
            value
        }
        None => json!({"state": "not_running", "lag": Value::Null}),
    };
    item["status"] = status;
    Ok(())
}

pub async fn get_one(
    state: AppState,
    _admin: Admin,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    let record = state
        .store
        .get_resource(kind.as_str(), &name)
        .await
        .map_err(|e| ApiError::from_store(e, "get"))?;
    let record = record.ok_or_else(|| ApiError::NotFound {
        kind: kind.as_str().to_string(),
        name: name.clone(),
    })?;
    let mut item = render(&record, kind);
    if kind == ResourceKind::LogStream {
        let head = chain_head(&state).await?;
        add_stream_status(&state, &mut item, head);
    }
    if kind == ResourceKind::NotificationTarget {
        add_target_status(&state, &mut item).await?;
    }
    Ok(Json(item))
}

pub async fn put(
    state: AppState,
    admin: Admin,
    Path((kind, name)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let kind = parse_kind(&kind)?;
    let Json(mut body) =
        body.map_err(|rejection| json_rejection(rejection, state.settings.max_body_bytes))?;
    let Value::Object(map) = &mut body else {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object describing a {kind}"
        )));
    };
    match map.get("name") {
        None => {
            map.insert("name".into(), json!(name));
        }
        Some(Value::String(body_name)) if *body_name == name => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "name",
                &other.to_string(),
                &format!("must match the name in the path, {name:?}"),
            ));
        }
    }
    // Metadata from a previous GET may be sent back as it was; it is not part of the resource.
    for field in [
        "created_at",
        "updated_at",
        "enabled",
        "credential_type",
        "typical_lifetime",
        "status",
    ] {
        map.remove(field);
    }
    // So is a write-only field as a read shows it ("set", fingerprint, age): it keeps the value.
    map.retain(|_, field| !secrets::is_described(field));
    let resource = parse_resource(kind, body)
        .map_err(|error| ApiError::bad_request(format!("invalid {kind} {name:?}: {error}")))?;
    let changes = commit_changes(
        &state,
        &admin.actor(),
        Request {
            puts: vec![resource],
            ..Request::default()
        },
    )
    .await?;
    let record = state
        .store
        .get_resource(kind.as_str(), &name)
        .await
        .map_err(|e| ApiError::from_store(e, "get"))?;
    Ok(Json(json!({
        "change": changes.first().map(|change| change.action),
        "resource": record.map(|record| render(&record, kind)),
    })))
}

/// Parses a resource body like [`Resource::from_json`], but an error starts with the path of the
/// field at fault (such as `spiffe_id` or `identities[0].match`), as apply's errors do. Tagged
/// kinds (trust and credential providers, access conditions) add the path of their own fields.
fn parse_resource(kind: ResourceKind, body: Value) -> Result<Resource, String> {
    fn parse<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, String> {
        serde_path_to_error::deserialize(body).map_err(|error| {
            let path = error.path().to_string();
            if path == "." {
                error.into_inner().to_string()
            } else {
                format!("{path}: {}", error.into_inner())
            }
        })
    }
    Ok(match kind {
        ResourceKind::TrustProvider => Resource::TrustProvider(parse(body)?),
        ResourceKind::ClientWorkload => Resource::ClientWorkload(parse(body)?),
        ResourceKind::ServerWorkload => Resource::ServerWorkload(parse(body)?),
        ResourceKind::CredentialProvider => Resource::CredentialProvider(parse(body)?),
        ResourceKind::AccessCondition => Resource::AccessCondition(parse(body)?),
        ResourceKind::AccessPolicy => Resource::AccessPolicy(parse(body)?),
        ResourceKind::LogStream => Resource::LogStream(parse(body)?),
        ResourceKind::NotificationTarget => Resource::NotificationTarget(parse(body)?),
        ResourceKind::AlertRule => Resource::AlertRule(parse(body)?),
    })
}

pub async fn delete(
    state: AppState,
    admin: Admin,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let kind = parse_kind(&kind)?;
    commit_changes(
        &state,
        &admin.actor(),
        Request {
            deletes: vec![(kind, name.clone())],
            ..Request::default()
        },
    )
    .await?;
    Ok(Json(
        json!({"deleted": {"kind": kind.as_str(), "name": name}}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    pub config: ConfigFile,
    #[serde(default)]
    pub prune: bool,
    #[serde(default)]
    pub dry_run: bool,
}

pub async fn apply(
    state: AppState,
    admin: Admin,
    body: Result<Json<ApplyBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let Json(body) =
        body.map_err(|rejection| json_rejection(rejection, state.settings.max_body_bytes))?;
    let changes = apply_config(&state, &admin.actor(), body).await?;
    Ok(Json(json!({"changes": changes})))
}

/// Applies a whole configuration file in one transaction. Never changes enabled flags.
pub async fn apply_config(
    state: &crate::state::AppState,
    actor: &str,
    body: ApplyBody,
) -> Result<Vec<Change>, ApiError> {
    let resources = body.config.into_resources();
    // An empty file with prune is far more likely a failed template or pipeline than a request to
    // delete everything, so it is rejected. `mayfly delete` removes resources one by one.
    if body.prune && resources.is_empty() {
        return Err(ApiError::invalid(
            "config",
            "",
            "declares no resources, and prune would delete every resource; check the file, or delete resources with mayfly delete",
        ));
    }
    mayfly_domain::config_file::validate_resources("request", None, &resources).map_err(
        |error| ApiError::Invalid {
            detail: error.to_string(),
            field: None,
            value: None,
        },
    )?;
    commit_changes(
        state,
        actor,
        Request {
            puts: resources,
            prune: body.prune,
            dry_run: body.dry_run,
            ..Request::default()
        },
    )
    .await
}

pub async fn disable(
    state: AppState,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    switch(state, admin, name, false).await
}

pub async fn enable(
    state: AppState,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    switch(state, admin, name, true).await
}

async fn switch(
    state: AppState,
    admin: Admin,
    name: String,
    enabled: bool,
) -> Result<Json<Value>, ApiError> {
    admin.require_write()?;
    let request = Request {
        set_enabled: vec![(name.clone(), enabled)],
        ..Request::default()
    };
    let changes = commit_changes(&state, &admin.actor(), request).await?;
    let changed = changes
        .iter()
        .any(|change| change.action != changes::Action::Unchanged);
    if changed {
        tracing::warn!(server_workload = %name, enabled, actor = %admin.actor(), "server workload switched");
    }
    Ok(Json(
        json!({"name": name, "enabled": enabled, "changed": changed}),
    ))
}
