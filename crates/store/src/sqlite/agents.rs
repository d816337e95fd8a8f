//! Agents and their one-time join tokens, stored as hashes: join, renewal, lookup and eviction.

use jiff::Timestamp;
use mayfly_domain::audit::{AuditEvent, NewAuditEvent};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::audit::append_in;
use super::codec::{
    db_error, finish, from_micros, from_optional_micros, is_unique_violation, to_micros,
};
use crate::error::StoreError;
use crate::model::{AgentCredentialHash, AgentJoinTokenRecord, AgentRecord};

const SELECT_JOIN_TOKEN: &str = "SELECT id, agent, token_hash, created_at_us, expires_at_us, \
     used_at_us, revoked_at_us FROM agent_join_tokens";

const SELECT_AGENT: &str = "SELECT name, credential_hash, credential_expires_at_us, \
     joined_at_us, renewed_at_us, evicted_at_us FROM agents";

/// Inserts a join token and appends `audit` in one transaction.
pub(super) async fn insert_join_token(
    pool: &SqlitePool,
    token: &AgentJoinTokenRecord,
    audit: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = insert_join_token_in(&mut tx, token, audit).await;
    finish(tx, result).await
}

/// Returns the join token with hash `token_hash`, in whatever state it is.
pub(super) async fn find_join_token(
    pool: &SqlitePool,
    token_hash: &str,
) -> Result<Option<AgentJoinTokenRecord>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_JOIN_TOKEN} WHERE token_hash = $1"
    )))
    .bind(token_hash)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    row.as_ref().map(decode_join_token).transpose()
}

/// Marks the join token used and gives its agent `credential`, in one transaction.
pub(super) async fn redeem_join_token(
    pool: &SqlitePool,
    token_hash: &str,
    now: Timestamp,
    credential: &AgentCredentialHash,
    audit: Vec<NewAuditEvent>,
) -> Result<Option<AgentRecord>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = redeem_in(&mut tx, token_hash, now, credential, audit).await;
    finish(tx, result).await
}

/// Returns the agent whose current credential has hash `credential_hash`, unless it is evicted.
/// The caller checks the expiry.
pub(super) async fn find_by_credential(
    pool: &SqlitePool,
    credential_hash: &str,
) -> Result<Option<AgentRecord>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_AGENT} WHERE credential_hash = $1 AND evicted_at_us IS NULL"
    )))
    .bind(credential_hash)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    row.as_ref().map(decode_agent).transpose()
}

/// Replaces the credential `old_hash` of agent `name` with `new`, while the old one is current
/// and unexpired and the agent is not evicted.
pub(super) async fn renew(
    pool: &SqlitePool,
    name: &str,
    old_hash: &str,
    new: &AgentCredentialHash,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE agents SET credential_hash = $1, credential_expires_at_us = $2, \
         renewed_at_us = $3 WHERE name = $4 AND credential_hash = $5 \
         AND credential_expires_at_us > $3 AND evicted_at_us IS NULL",
    )
    .bind(&new.hash)
    .bind(to_micros(new.expires_at))
    .bind(to_micros(now))
    .bind(name)
    .bind(old_hash)
    .execute(pool)
    .await
    .map_err(db_error)?
    .rows_affected();
    Ok(updated == 1)
}

/// Returns every agent, evicted ones included, sorted by name.
pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<AgentRecord>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT_AGENT} ORDER BY name")))
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    rows.iter().map(decode_agent).collect()
}

/// Evicts agent `name` and revokes its unused join tokens, in one transaction.
pub(super) async fn evict(
    pool: &SqlitePool,
    name: &str,
    now: Timestamp,
    audit: Vec<NewAuditEvent>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = evict_in(&mut tx, name, now, audit).await;
    finish(tx, result).await
}

async fn insert_join_token_in(
    conn: &mut SqliteConnection,
    token: &AgentJoinTokenRecord,
    audit: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO agent_join_tokens (id, agent, token_hash, created_at_us, expires_at_us, \
         used_at_us, revoked_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&token.id)
    .bind(&token.agent)
    .bind(&token.token_hash)
    .bind(to_micros(token.created_at))
    .bind(to_micros(token.expires_at))
    .bind(token.used_at.map(to_micros))
    .bind(token.revoked_at.map(to_micros))
    .execute(&mut *conn)
    .await;

    match inserted {
        Ok(_) => {}
        Err(err) if is_unique_violation(&err) => {
            return Err(StoreError::AlreadyExists {
                kind: "agent join token".to_string(),
                name: format!("{} ({})", token.agent, token.id),
            });
        }
        Err(err) => return Err(db_error(err)),
    }
    append_in(conn, audit).await
}

async fn redeem_in(
    conn: &mut SqliteConnection,
    token_hash: &str,
    now: Timestamp,
    credential: &AgentCredentialHash,
    audit: Vec<NewAuditEvent>,
) -> Result<Option<AgentRecord>, StoreError> {
    let now_us = to_micros(now);
    let agent: Option<String> = sqlx::query_scalar(
        "UPDATE agent_join_tokens SET used_at_us = $1 WHERE token_hash = $2 \
         AND used_at_us IS NULL AND revoked_at_us IS NULL AND expires_at_us > $1 RETURNING agent",
    )
    .bind(now_us)
    .bind(token_hash)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    let Some(agent) = agent else {
        return Ok(None);
    };

    // Joining again under the same name replaces the credential and lifts an eviction: only an
    // admin can create the join token, and evicting revokes the tokens created before.
    sqlx::query(
        "INSERT INTO agents (name, credential_hash, credential_expires_at_us, joined_at_us, \
         renewed_at_us, evicted_at_us) VALUES ($1, $2, $3, $4, $4, NULL) \
         ON CONFLICT (name) DO UPDATE SET credential_hash = excluded.credential_hash, \
         credential_expires_at_us = excluded.credential_expires_at_us, \
         joined_at_us = excluded.joined_at_us, renewed_at_us = excluded.renewed_at_us, \
         evicted_at_us = NULL",
    )
    .bind(&agent)
    .bind(&credential.hash)
    .bind(to_micros(credential.expires_at))
    .bind(now_us)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;

    append_in(conn, audit).await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_AGENT} WHERE name = $1"
    )))
    .bind(&agent)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    decode_agent(&row).map(Some)
}

async fn evict_in(
    conn: &mut SqliteConnection,
    name: &str,
    now: Timestamp,
    audit: Vec<NewAuditEvent>,
) -> Result<bool, StoreError> {
    let now_us = to_micros(now);
    let evicted = sqlx::query(
        "UPDATE agents SET evicted_at_us = $1, credential_hash = NULL \
         WHERE name = $2 AND evicted_at_us IS NULL",
    )
    .bind(now_us)
    .bind(name)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?
    .rows_affected();
    let revoked = sqlx::query(
        "UPDATE agent_join_tokens SET revoked_at_us = $1 \
         WHERE agent = $2 AND used_at_us IS NULL AND revoked_at_us IS NULL",
    )
    .bind(now_us)
    .bind(name)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?
    .rows_affected();

    if evicted == 0 && revoked == 0 {
        return Ok(false);
    }
    append_in(conn, audit).await?;
    Ok(true)
}

fn decode_join_token(row: &SqliteRow) -> Result<AgentJoinTokenRecord, StoreError> {
    Ok(AgentJoinTokenRecord {
        id: row.try_get("id").map_err(db_error)?,
        agent: row.try_get("agent").map_err(db_error)?,
        token_hash: row.try_get("token_hash").map_err(db_error)?,
        created_at: from_micros(
            "agent_join_tokens.created_at_us",
            row.try_get("created_at_us").map_err(db_error)?,
        )?,
        expires_at: from_micros(
            "agent_join_tokens.expires_at_us",
            row.try_get("expires_at_us").map_err(db_error)?,
        )?,
        used_at: from_optional_micros(
            "agent_join_tokens.used_at_us",
            row.try_get("used_at_us").map_err(db_error)?,
        )?,
        revoked_at: from_optional_micros(
            "agent_join_tokens.revoked_at_us",
            row.try_get("revoked_at_us").map_err(db_error)?,
        )?,
    })
}

fn decode_agent(row: &SqliteRow) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        name: row.try_get("name").map_err(db_error)?,
        credential_hash: row.try_get("credential_hash").map_err(db_error)?,
        credential_expires_at: from_optional_micros(
            "agents.credential_expires_at_us",
            row.try_get("credential_expires_at_us").map_err(db_error)?,
        )?,
        joined_at: from_micros(
            "agents.joined_at_us",
            row.try_get("joined_at_us").map_err(db_error)?,
        )?,
        renewed_at: from_micros(
            "agents.renewed_at_us",
            row.try_get("renewed_at_us").map_err(db_error)?,
        )?,
        evicted_at: from_optional_micros(
            "agents.evicted_at_us",
            row.try_get("evicted_at_us").map_err(db_error)?,
        )?,
    })
}
