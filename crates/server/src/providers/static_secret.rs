//! `static_secret`: returns a stored API key or password, only to providers that opted in.

use mayfly_domain::static_secret::StaticSecretProvider;
use serde_json::{Map, json};

use super::{Delivery, Issued};
use crate::secrets;
use crate::state::AppState;

pub(super) fn produce(
    state: &AppState,
    provider: &StaticSecretProvider,
    delivery: Delivery,
) -> Result<Issued, String> {
    if delivery == Delivery::Workload && !provider.allow_workload_delivery {
        return Err(format!(
            "static secret provider {:?} does not deliver its value to workloads (only the agent's proxy injects it); \
             set allow_workload_delivery: true on the provider to allow it",
            provider.name
        ));
    }
    let sealed = provider.sealed_value.as_ref().ok_or_else(|| {
        format!(
            "static secret provider {:?} has no stored value",
            provider.name
        )
    })?;
    let value = secrets::open(state.keys.kek(), &provider.name, "value", sealed)
        .map_err(|error| error.to_string())?;

    let mut audit = Map::new();
    audit.insert("secret_fingerprint".into(), json!(sealed.fingerprint));
    audit.insert("secret_set_at".into(), json!(sealed.set_at.to_string()));
    Ok(Issued {
        credential_type: provider.credential_type(),
        token: value,
        token_id: sealed.fingerprint.clone(),
        username: provider.username.clone(),
        expires_at: None,
        fields: Vec::new(),
        audit,
    })
}
