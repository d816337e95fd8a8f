//! The audit log: appending to the hash chain and reading events back.

use mayfly_domain::audit::{AuditEvent, NewAuditEvent, chain_hash_of_json};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::codec::{
    db_error, finish, from_json_text, is_unique_violation, to_micros, to_micros_ceil,
};
use crate::error::StoreError;
use crate::model::AuditFilter;

/// Appends `events` in one immediate transaction.
pub(super) async fn append(
    pool: &SqlitePool,
    events: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }

    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    let result = append_in(&mut tx, events).await;
    finish(tx, result).await
}

/// Appends `events` to the chain inside the caller's write transaction and moves the head.
pub(super) async fn append_in(
    conn: &mut SqliteConnection,
    events: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }

    let head = sqlx::query("SELECT seq, hash FROM audit_chain_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    let mut seq: i64 = head.try_get("seq").map_err(db_error)?;
    let mut prev_hash: String = head.try_get("hash").map_err(db_error)?;

    let mut appended = Vec::with_capacity(events.len());
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let (event, json) = canonical_form(event)?;
        seq = seq
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt(format!("audit sequence {seq} overflows")))?;
        let hash = chain_hash_of_json(&prev_hash, seq, &json);

        rows.push(json);
        appended.push(AuditEvent {
            seq,
            event,
            prev_hash,
            hash: hash.clone(),
        });
        prev_hash = hash;
    }

    // Many rows per statement: each statement is a round trip to the connection's worker
    // thread, which would otherwise dominate the cost of a large group commit.
    for (events, jsons) in appended
        .chunks(ROWS_PER_INSERT)
        .zip(rows.chunks(ROWS_PER_INSERT))
    {
        insert_events(conn, events, jsons).await?;
    }

    sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev_hash)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(appended)
}

/// Returns the events matching `filter`.
pub(super) async fn list(
    pool: &SqlitePool,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT seq, id, time_us, kind, outcome, server_workload, client_workload, event_json, \
         prev_hash, hash FROM audit_events WHERE 1 = 1",
    );

    if let Some(server_workload) = &filter.server_workload {
        query
            .push(" AND server_workload = ")
            .push_bind(server_workload.clone());
    }
    if let Some(client_workload) = &filter.client_workload {
        query
            .push(" AND client_workload = ")
            .push_bind(client_workload.clone());
    }
    if let Some(outcome) = filter.outcome {
        query.push(" AND outcome = ").push_bind(outcome.as_str());
    }
    if let Some(kind) = filter.kind {
        query.push(" AND kind = ").push_bind(kind.as_str());
    }
    if let Some(since) = filter.since {
        query
            .push(" AND time_us >= ")
            .push_bind(to_micros_ceil(since));
    }
    if let Some(until) = filter.until {
        query
            .push(" AND time_us < ")
            .push_bind(to_micros_ceil(until));
    }
    if let Some(after_seq) = filter.after_seq {
        query.push(" AND seq > ").push_bind(after_seq);
    }
    if let Some(before_seq) = filter.before_seq {
        query.push(" AND seq < ").push_bind(before_seq);
    }

    query.push(if filter.descending {
        " ORDER BY seq DESC"
    } else {
        " ORDER BY seq ASC"
    });
    query.push(" LIMIT ").push_bind(i64::from(filter.limit));

    let rows = query.build().fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(decode_event).collect()
}

/// Returns up to `limit` events from `from_seq` on, oldest first.
pub(super) async fn range(
    pool: &SqlitePool,
    from_seq: i64,
    limit: u32,
) -> Result<Vec<AuditEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, id, time_us, kind, outcome, server_workload, client_workload, event_json, \
         prev_hash, hash FROM audit_events \
         WHERE seq >= $1 ORDER BY seq ASC LIMIT $2",
    )
    .bind(from_seq)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.iter().map(decode_event).collect()
}

/// Returns the chain head, or `None` before the first append.
pub(super) async fn head(pool: &SqlitePool) -> Result<Option<(i64, String)>, StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_chain_head WHERE id = 1")
        .fetch_one(pool)
        .await
        .map_err(db_error)?;
    let seq: i64 = row.try_get("seq").map_err(db_error)?;
    let hash: String = row.try_get("hash").map_err(db_error)?;

    Ok((seq > 0).then_some((seq, hash)))
}

/// Returns the event with the canonical JSON that is stored and hashed.
///
/// The JSON is parsed back and serialized again, and the parsed event is the one hashed, so
/// what a reader later parses from the stored text has exactly the hashed form. That matters
/// for floating-point numbers in `detail`, which serde_json's default parser does not always
/// read back to the same value.
fn canonical_form(event: NewAuditEvent) -> Result<(NewAuditEvent, String), StoreError> {
    let mut json = event.canonical_json();
    // Strings, integers and booleans serialize the same after a round trip; only floats can
    // change, so only events that hold one pay for the check.
    if !event.has_float() {
        return Ok((event, json));
    }
    let id = event.id.clone();

    // One round trip is normally a fixed point; a second absorbs one more rounding step.
    for _ in 0..2 {
        let reparsed: NewAuditEvent =
            serde_json::from_str(&json).map_err(|err| StoreError::UnstableAuditEvent {
                id: id.clone(),
                reason: format!("its JSON does not parse back: {err}"),
            })?;
        let again = reparsed.canonical_json();
        if again == json {
            return Ok((reparsed, json));
        }
        json = again;
    }

    Err(StoreError::UnstableAuditEvent {
        id,
        reason: "its canonical JSON changes on every round trip".to_string(),
    })
}

/// Rows per INSERT statement: 10 parameters each keeps a statement far below SQLite's limit of
/// 32,766 parameters.
const ROWS_PER_INSERT: usize = 200;

async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[AuditEvent],
    jsons: &[String],
) -> Result<(), StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT INTO audit_events (seq, id, time_us, kind, outcome, server_workload, \
         client_workload, event_json, prev_hash, hash) ",
    );
    query.push_values(events.iter().zip(jsons), |mut row, (stored, json)| {
        let event = &stored.event;
        row.push_bind(stored.seq)
            .push_bind(event.id.clone())
            .push_bind(to_micros(event.time))
            .push_bind(event.kind.as_str())
            .push_bind(event.outcome.map(|outcome| outcome.as_str()))
            .push_bind(event.server_workload.clone())
            .push_bind(event.client_workload.clone())
            .push_bind(json.clone())
            .push_bind(stored.prev_hash.clone())
            .push_bind(stored.hash.clone());
    });
    let inserted = query.build().execute(&mut *conn).await;

    match inserted {
        Ok(_) => Ok(()),
        Err(err) if is_unique_violation(&err) => {
            for stored in events {
                if id_exists(conn, &stored.event.id).await? {
                    return Err(StoreError::DuplicateAuditEvent {
                        id: stored.event.id.clone(),
                    });
                }
            }
            // The batch may repeat an id within itself, which the table also rejects.
            let mut seen = std::collections::HashSet::new();
            match events
                .iter()
                .find(|stored| !seen.insert(stored.event.id.as_str()))
            {
                Some(stored) => Err(StoreError::DuplicateAuditEvent {
                    id: stored.event.id.clone(),
                }),
                None => Err(db_error(err)),
            }
        }
        Err(err) => Err(db_error(err)),
    }
}

async fn id_exists(conn: &mut SqliteConnection, id: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM audit_events WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(found.is_some())
}

fn decode_event(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    let json: String = row.try_get("event_json").map_err(db_error)?;
    let stored = AuditEvent {
        seq: row.try_get("seq").map_err(db_error)?,
        event: from_json_text("audit_events.event_json", &json)?,
        prev_hash: row.try_get("prev_hash").map_err(db_error)?,
        hash: row.try_get("hash").map_err(db_error)?,
    };
    check_index_columns(row, &stored)?;
    Ok(stored)
}

/// Checks that the columns that queries filter on agree with the hashed event JSON. The chain
/// hash covers only the JSON, so an edited column could otherwise hide an event from filtered
/// queries while the chain still verifies.
fn check_index_columns(row: &SqliteRow, stored: &AuditEvent) -> Result<(), StoreError> {
    let event = &stored.event;
    let id: String = row.try_get("id").map_err(db_error)?;
    let time_us: i64 = row.try_get("time_us").map_err(db_error)?;
    let kind: String = row.try_get("kind").map_err(db_error)?;
    let outcome: Option<String> = row.try_get("outcome").map_err(db_error)?;
    let server_workload: Option<String> = row.try_get("server_workload").map_err(db_error)?;
    let client_workload: Option<String> = row.try_get("client_workload").map_err(db_error)?;

    let mismatch = if id != event.id {
        Some("id")
    } else if time_us != to_micros(event.time) {
        Some("time_us")
    } else if kind != event.kind.as_str() {
        Some("kind")
    } else if outcome.as_deref() != event.outcome.map(|outcome| outcome.as_str()) {
        Some("outcome")
    } else if server_workload != event.server_workload {
        Some("server_workload")
    } else if client_workload != event.client_workload {
        Some("client_workload")
    } else {
        None
    };
    match mismatch {
        Some(column) => Err(StoreError::Corrupt(format!(
            "audit event {}: column {column} differs from the event's hashed content (edited)",
            stored.seq
        ))),
        None => Ok(()),
    }
}
