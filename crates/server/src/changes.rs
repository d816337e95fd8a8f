//! Configuration writes: every `PUT`, `DELETE`, apply, enable and disable goes through
//! [`commit_changes`], which validates the resulting configuration as a whole, stores the change
//! and its audit events in one transaction, and reloads the configuration.

use std::collections::BTreeSet;

use mayfly_domain::audit::{AuditKind, NewAuditEvent};
use mayfly_domain::config::Config;
use mayfly_domain::resources::{CredentialProvider, Resource, ResourceKind, normalize_host};
use mayfly_store::{ChangeSet, ResourcePut, ResourceRef, StoreError};
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock;
use crate::problem::ApiError;
use crate::secrets;
use crate::state::AppState;

/// What happened to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Delete,
    Unchanged,
    Enable,
    Disable,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
            Action::Enable => "enable",
            Action::Disable => "disable",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub action: Action,
    pub kind: ResourceKind,
    pub name: String,
}

/// A requested configuration write.
#[derive(Default)]
pub struct Request {
    pub puts: Vec<Resource>,
    pub deletes: Vec<(ResourceKind, String)>,
    /// Server workload name and the enabled flag to set.
    pub set_enabled: Vec<(String, bool)>,
    /// Delete every resource that `puts` does not list (apply with `--prune`).
    pub prune: bool,
    pub dry_run: bool,
}

/// Validates and stores a configuration write; returns one entry per resource touched.
pub async fn commit_changes(
    state: &AppState,
    actor: &str,
    mut request: Request,
) -> Result<Vec<Change>, ApiError> {
    let _writer = state.admin_writes.lock().await;
    state
        .reload_config()
        .await
        .map_err(|error| ApiError::from_store(error, "configuration change"))?;
    let snapshot = state.config();
    let current = &snapshot.config;
    let now = clock::now();

    keep_redacted_secrets(current, &mut request.puts)?;
    for resource in &mut request.puts {
        if let Resource::ServerWorkload(workload) = resource {
            workload.host = normalize_host(&workload.host);
        }
    }
    for resource in &request.puts {
        resource.validate().map_err(|error| ApiError::Invalid {
            detail: format!("{} {:?}: {error}", resource.kind(), resource.name()),
            field: Some(error.field.clone()),
            value: Some(error.value.clone()),
        })?;
        if resource.needs_location() && state.geoip.is_none() {
            return Err(ApiError::Invalid {
                detail: format!(
                    "{} {:?} needs the location of source addresses, but the server has no geoip_database setting: set it to a MaxMind-format database file and restart the server",
                    resource.kind(),
                    resource.name()
                ),
                field: Some("geoip_database".to_string()),
                value: None,
            });
        }
    }

    // Secrets are sealed before anything compares, stores or audits the resource.
    let puts = std::mem::take(&mut request.puts);
    request.puts = puts
        .into_iter()
        .map(|resource| secrets::seal_resource(state.keys.kek(), current, resource, now))
        .collect::<Result<_, _>>()
        .map_err(|error| error.into_api(&crate::problem::current_request_id()))?;

    let mut deletes = request.deletes.clone();
    if request.prune {
        let kept: BTreeSet<(ResourceKind, &str)> =
            request.puts.iter().map(|r| (r.kind(), r.name())).collect();
        for resource in current.resources() {
            if !kept.contains(&(resource.kind(), resource.name())) {
                deletes.push((resource.kind(), resource.name().to_string()));
            }
        }
    }

    let mut next: Config = current.clone();
    let mut changes = Vec::new();
    let mut change_set = ChangeSet::new(now);

    for resource in &request.puts {
        let before = current.get(resource.kind(), resource.name());
        let action = match &before {
            None => Action::Create,
            Some(existing) if existing == resource => Action::Unchanged,
            Some(_) => Action::Update,
        };
        changes.push(Change {
            action,
            kind: resource.kind(),
            name: resource.name().to_string(),
        });
        if action == Action::Unchanged {
            continue;
        }
        next.insert(resource.clone());
        let mut spec = resource.to_json();
        if resource.kind() == ResourceKind::LogStream {
            crate::log_streams::secrets::seal_spec(state.keys.kek(), resource.name(), &mut spec)
                .map_err(|error| {
                    tracing::error!(error = %error, "sealing a log stream secret failed");
                    ApiError::from_store(
                        StoreError::Database("sealing a log stream secret failed".to_string()),
                        "configuration change",
                    )
                })?;
        }
        change_set.puts.push(ResourcePut {
            kind: resource.kind().as_str().to_string(),
            name: resource.name().to_string(),
            spec,
            refs: resource
                .references()
                .into_iter()
                .map(|r| ResourceRef::new(r.kind.as_str(), r.name))
                .collect(),
        });
        change_set.audit.push(change_event(
            now,
            actor,
            action,
            resource.kind(),
            resource.name(),
            before.as_ref(),
            Some(resource),
        ));
    }

    for (kind, name) in &deletes {
        let Some(before) = current.get(*kind, name) else {
            return Err(ApiError::NotFound {
                kind: kind.as_str().to_string(),
                name: name.clone(),
            });
        };
        next.remove(*kind, name);
        changes.push(Change {
            action: Action::Delete,
            kind: *kind,
            name: name.clone(),
        });
        change_set
            .deletes
            .push(ResourceRef::new(kind.as_str(), name.clone()));
        change_set.audit.push(change_event(
            now,
            actor,
            Action::Delete,
            *kind,
            name,
            Some(&before),
            None,
        ));
    }

    for (name, enabled) in &request.set_enabled {
        if !current.server_workloads.contains_key(name) {
            return Err(ApiError::NotFound {
                kind: ResourceKind::ServerWorkload.as_str().to_string(),
                name: name.clone(),
            });
        }
        let was = current.is_enabled(name);
        let action = if *enabled {
            Action::Enable
        } else {
            Action::Disable
        };
        if was == *enabled {
            changes.push(Change {
                action: Action::Unchanged,
                kind: ResourceKind::ServerWorkload,
                name: name.clone(),
            });
            continue;
        }
        changes.push(Change {
            action,
            kind: ResourceKind::ServerWorkload,
            name: name.clone(),
        });
        change_set.set_enabled.push((
            ResourceRef::new(ResourceKind::ServerWorkload.as_str(), name.clone()),
            *enabled,
        ));
        let mut event = NewAuditEvent::new(
            clock::new_event_id(),
            now,
            AuditKind::ConfigChange,
            json!({
                "actor": actor,
                "action": action.as_str(),
                "resource_kind": ResourceKind::ServerWorkload.as_str(),
                "resource_name": name,
                "before": {"enabled": was},
                "after": {"enabled": enabled},
            }),
        );
        event.server_workload = Some(name.clone());
        change_set.audit.push(event);
    }

    // A deleted resource that something still refers to is a conflict naming the referrers,
    // checked before the whole-configuration validation would report it as a missing reference.
    for (kind, name) in &deletes {
        let referrers = next.referrers(*kind, name);
        if !referrers.is_empty() {
            let referrers = referrers
                .into_iter()
                .map(|(kind, name)| ResourceRef::new(kind.as_str(), name))
                .collect();
            let error = StoreError::ReferencedBy {
                kind: kind.as_str().to_string(),
                name: name.clone(),
                referrers,
            };
            return Err(ApiError::from_store(error, "configuration change"));
        }
    }

    next.reindex();
    check_whole(&next, state)?;

    if request.dry_run || !change_set.changes_resources() {
        return Ok(changes);
    }
    let stored = state
        .store
        .commit(change_set)
        .await
        .map_err(|error| ApiError::from_store(error, "configuration change"))?;
    start_new_target_cursors(state, &stored).await;
    // Waits for the credential requests already decided on the previous configuration, so none
    // of them is still deciding or writing its audit event after this change returns.
    let _gate = state.issuance.write().await;
    state
        .reload_config()
        .await
        .map_err(|error| ApiError::from_store(error, "configuration change"))?;
    Ok(changes)
}

/// Sets the delivery cursor of each notification target that `stored` created to the sequence
/// number of its creation event, so alerts that fired before the target existed are never sent
/// to it. A failure is logged: the target's task then starts at the chain head instead.
async fn start_new_target_cursors(state: &AppState, stored: &[mayfly_domain::audit::AuditEvent]) {
    for event in stored {
        let detail = &event.event.detail;
        let created = detail.get("action").and_then(Value::as_str) == Some(Action::Create.as_str())
            && detail.get("resource_kind").and_then(Value::as_str)
                == Some(ResourceKind::NotificationTarget.as_str());
        let Some(name) = detail
            .get("resource_name")
            .and_then(Value::as_str)
            .filter(|_| created)
        else {
            continue;
        };
        // A cursor left by an earlier target of the same name is below this event, so the
        // cursor, which only moves forward, ends at the creation event either way.
        let cursor = crate::notifications::cursor_name(name);
        if let Err(error) = state
            .store
            .advance_stream_cursor(&cursor, event.seq, 0, clock::now())
            .await
        {
            tracing::warn!(target_name = %name, error = %error, "setting the cursor of a new notification target failed");
        }
    }
}

/// Keeps the stored secret of a log stream whose new spec carries the `(redacted)` placeholder
/// that configuration reads return, so a resource read and written back keeps its secret. The
/// placeholder is rejected for a stream that has no stored secret to keep. A stored secret of a
/// log stream, notification target or OAuth provider is kept only while the destination's
/// scheme, host and port stay the same.
fn keep_redacted_secrets(current: &Config, puts: &mut [Resource]) -> Result<(), ApiError> {
    for resource in puts {
        match resource {
            Resource::LogStream(stream) => {
                let redacted = stream
                    .secret
                    .as_ref()
                    .is_some_and(|secret| secret.expose() == REDACTED);
                if !redacted {
                    continue;
                }
                let Some(existing) = current.log_streams.get(&stream.name) else {
                    return Err(no_stored_secret("log_stream", &stream.name));
                };
                let Some(secret) = existing.secret.clone() else {
                    return Err(no_stored_secret("log_stream", &stream.name));
                };
                check_same_origin(
                    "log_stream",
                    &stream.name,
                    existing.url.as_deref(),
                    stream.url.as_deref(),
                )?;
                stream.secret = Some(secret);
            }
            Resource::NotificationTarget(target) => {
                // A target written without a secret keeps the stored one (see `seal_resource`).
                let keeps_stored = target.auth.uses_secret() && target.secret.is_none();
                if let Some(existing) = current.notification_targets.get(&target.name)
                    && keeps_stored
                    && existing.sealed_secret.is_some()
                {
                    check_same_origin(
                        "notification_target",
                        &target.name,
                        Some(&existing.url),
                        Some(&target.url),
                    )?;
                }
            }
            Resource::CredentialProvider(CredentialProvider::OauthClientCredentials(provider)) => {
                // A provider written without a client secret keeps the stored one (see
                // `seal_resource`), which must not follow a token_url to another host.
                let keeps_stored =
                    provider.client_auth.uses_secret() && provider.client_secret.is_none();
                if let Some(CredentialProvider::OauthClientCredentials(existing)) =
                    current.credential_providers.get(&provider.name)
                    && keeps_stored
                    && existing.sealed_client_secret.is_some()
                {
                    check_same_origin(
                        "credential_provider",
                        &provider.name,
                        Some(&existing.token_url),
                        Some(&provider.token_url),
                    )?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn no_stored_secret(kind: &str, name: &str) -> ApiError {
    ApiError::invalid(
        "secret",
        REDACTED,
        &format!("{kind} {name:?} has no stored secret to keep: set the secret itself"),
    )
}

/// Rejects keeping a stored secret when the destination's origin (scheme, host and port)
/// changes, so a configuration write cannot send a stored secret to a new host.
fn check_same_origin(
    kind: &str,
    name: &str,
    stored: Option<&str>,
    next: Option<&str>,
) -> Result<(), ApiError> {
    let origin = |url: Option<&str>| {
        url.and_then(|url| reqwest::Url::parse(url).ok())
            .map(|url| url.origin())
    };
    if origin(stored) == origin(next) {
        return Ok(());
    }
    Err(ApiError::invalid(
        "secret",
        "",
        &format!(
            "{kind} {name:?} changes the scheme, host or port of its url, so the stored secret is not kept: send the secret again"
        ),
    ))
}

fn check_whole(config: &Config, state: &AppState) -> Result<(), ApiError> {
    let errors = config.validate(&state.trust_domain);
    if errors.is_empty() {
        return Ok(());
    }
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let value = errors.iter().find_map(|error| match error {
        mayfly_domain::config::ConfigError::MissingReference { ref_name, .. } => {
            Some(ref_name.clone())
        }
        _ => None,
    });
    Err(ApiError::Invalid {
        detail: messages.join("; "),
        field: None,
        value,
    })
}

fn change_event(
    now: jiff::Timestamp,
    actor: &str,
    action: Action,
    kind: ResourceKind,
    name: &str,
    before: Option<&Resource>,
    after: Option<&Resource>,
) -> NewAuditEvent {
    let detail = json!({
        "actor": actor,
        "action": action.as_str(),
        "resource_kind": kind.as_str(),
        "resource_name": name,
        "before": before.map(|r| secrets::describe_sealed(redact(r.to_json()), Some(now))),
        "after": after.map(|r| secrets::describe_sealed(redact(r.to_json()), Some(now))),
    });
    let mut event = NewAuditEvent::new(clock::new_event_id(), now, AuditKind::ConfigChange, detail);
    if kind == ResourceKind::ServerWorkload {
        event.server_workload = Some(name.to_string());
    }
    event
}

/// The value that replaces a secret in audit events and configuration reads.
pub const REDACTED: &str = "(redacted)";

/// Field names whose values are secrets; they are replaced before a resource reaches an audit
/// event or a configuration read.
const SECRET_FIELDS: [&str; 5] = ["client_secret", "value", "password", "secret", "token"];

/// Replaces secret field values with a placeholder, at any depth.
pub fn redact(mut value: Value) -> Value {
    redact_in_place(&mut value);
    value
}

fn redact_in_place(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if SECRET_FIELDS.contains(&key.as_str()) && !field.is_null() {
                    *field = json!(REDACTED);
                } else {
                    redact_in_place(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_in_place),
        _ => {}
    }
}
