//! Runs the conformance checks against `SqliteStore`, each on a new database file, plus the
//! checks that only concern SQLite: file permissions, journal mode and reads during a write.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mayfly_store::{SqliteStore, Store, StoreError, conformance};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use tempfile::TempDir;

/// Opens a new store in a fresh temporary directory, which must outlive the store.
async fn fresh() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("mayfly.db"))
        .await
        .unwrap();
    (dir, store)
}

/// Generates one test per conformance check that takes `&dyn Store`.
macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (_dir, store) = fresh().await;
                conformance::$check(&store).await;
                store.close().await;
            }
        )*
    };
}

conformance_tests!(
    resource_round_trip,
    update_keeps_created_at,
    put_keeps_enabled,
    dangling_reference_writes_nothing,
    referenced_delete_names_all_referrers,
    change_set_is_atomic,
    missing_targets_not_found,
    config_version_counts_resource_commits,
    replaced_refs_release_targets,
    audit_chain_verifies,
    audit_json_round_trips_exactly,
    replayed_audit_id_rejected,
    audit_filters_and_paging,
    checkpoints_round_trip,
    forged_checkpoint_rejected,
    purge_keeps_chain_anchored,
    purge_of_whole_chain_keeps_head,
    purge_without_checkpoint_deletes_nothing,
    purge_spares_undelivered_events,
    stream_cursor_round_trip,
    stale_cursor_write_cannot_move_back,
    checkpoints_after_pages,
    alert_acknowledged_once,
    signing_key_round_trip,
    replica_race_cannot_double_rotate,
    removed_key_keeps_public_jwk,
    x509_authority_round_trip,
    x509_authority_race_cannot_double_rotate,
    removed_x509_authority_keeps_certificate,
    admin_token_lookup_and_revocation,
    meta_round_trip,
    ping_succeeds,
    agent_join_token_is_single_use,
    expired_agent_secrets_rejected,
    evicted_agent_loses_credential,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_gapless() {
    let (_dir, store) = fresh().await;
    let store: Arc<dyn Store> = Arc::new(store);
    conformance::concurrent_appends_are_gapless(Arc::clone(&store)).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mayfly.db");
    conformance::data_survives_reopen(|| {
        let path = path.clone();
        async move {
            let store = SqliteStore::open(&path).await.unwrap();
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[tokio::test]
async fn open_creates_private_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data").join("nested");
    let path = data_dir.join("mayfly.db");

    let store = SqliteStore::open(&path).await.unwrap();
    store
        .set_meta("trust_domain", "mayfly.local")
        .await
        .unwrap();

    assert_eq!(mode_of(&data_dir), 0o700, "data directory");
    assert_eq!(mode_of(&path), 0o600, "database file");
    for suffix in ["-wal", "-shm"] {
        let file = sibling(&path, suffix);
        assert!(file.exists(), "{suffix} exists while the store is open");
        assert_eq!(mode_of(&file), 0o600, "{suffix} file");
    }
    store.close().await;
}

#[tokio::test]
async fn open_keeps_existing_file_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mayfly.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(
        mode_of(&path),
        0o640,
        "the operator's choice is kept, with a warning"
    );
    store.close().await;
}

#[tokio::test]
async fn open_under_a_file_fails_naming_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    let path = blocker.join("mayfly.db");

    match SqliteStore::open(&path).await {
        Err(StoreError::Path { path: reported, .. }) => assert_eq!(reported, path),
        other => panic!("expected a Path error, got {other:?}"),
    }
}

#[tokio::test]
async fn open_rejects_a_file_that_is_not_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mayfly.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();

    let result = SqliteStore::open(&path).await;
    assert!(
        matches!(
            result,
            Err(StoreError::Database(_) | StoreError::Migration(_))
        ),
        "expected a database error, got {result:?}"
    );
}

#[tokio::test]
async fn database_file_uses_wal() {
    let (dir, store) = fresh().await;
    store.ping().await.unwrap();

    let url = format!("sqlite://{}", dir.path().join("mayfly.db").display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal", "the journal mode is stored in the file");
    conn.close().await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_proceed_during_a_write_transaction() {
    let (dir, store) = fresh().await;
    store.set_meta("trust_domain", "before").await.unwrap();

    // Another connection holds the write lock with an uncommitted change.
    let url = format!("sqlite://{}", dir.path().join("mayfly.db").display());
    let mut writer = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    sqlx::query("UPDATE meta SET value = 'after' WHERE key = 'trust_domain'")
        .execute(&mut writer)
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let value = store.get_meta("trust_domain").await.unwrap();
    assert_eq!(
        value.as_deref(),
        Some("before"),
        "readers see the last committed value"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "the read did not wait for the busy timeout"
    );

    sqlx::query("ROLLBACK").execute(&mut writer).await.unwrap();
    writer.close().await.unwrap();
    store.close().await;
}
