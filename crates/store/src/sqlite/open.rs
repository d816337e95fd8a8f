//! Opening the database file: file permissions, connection settings and migrations.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::SqliteStore;
use crate::error::StoreError;

/// Number of connections in the read pool.
pub const READ_CONNECTIONS: u32 = 4;

/// How long a statement waits for another process's lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite migrations, embedded at build time. Each entry is (version, description, SQL)
/// and matches a file `migrations/sqlite/{version:04}_{description}.sql`; a unit test checks
/// that the list and the folder agree.
///
/// NOTE: `sqlx::migrate!` exists only with sqlx's `macros` feature, which this workspace leaves
/// off, so the files are embedded with `include_str!`. The version, description and checksum
/// match what `sqlx::migrate!` would record, so switching later needs no database change.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "agents",
        include_str!("../../migrations/sqlite/0002_agents.sql"),
    ),
    (
        3,
        "log_stream_cursors",
        include_str!("../../migrations/sqlite/0003_log_stream_cursors.sql"),
    ),
    (
        4,
        "alert_acknowledgements",
        include_str!("../../migrations/sqlite/0004_alert_acknowledgements.sql"),
    ),
    (
        5,
        "x509_authorities",
        include_str!("../../migrations/sqlite/0005_x509_authorities.sql"),
    ),
];

impl SqliteStore {
    /// Opens the database at `path` and applies pending migrations.
    ///
    /// A missing file is created with mode 0600, and missing parent directories with mode 0700.
    /// An existing file keeps its mode, with a warning when group or others may access it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        prepare_file(path)?;

        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);

        // The writer connection stays open for the store's lifetime, so the WAL and its index
        // file are never removed while read connections use them.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A local SQLite connection cannot go stale, so no ping before each use.
            .test_before_acquire(false)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(|err| open_error(path, err))?;

        migrator()
            .run(&writer)
            .await
            .map_err(|err| StoreError::Migration(err.to_string()))?;

        let readers = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .test_before_acquire(false)
            .connect_with(options.pragma("query_only", "ON"))
            .await
            .map_err(|err| open_error(path, err))?;

        tracing::info!(path = %path.display(), "opened the SQLite store");
        Ok(SqliteStore { writer, readers })
    }
}

/// Builds the migrator from the embedded migrations.
fn migrator() -> Migrator {
    let migrations = SQLITE_MIGRATIONS
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                description.into(),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(sql),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// Creates the parent directory (mode 0700) and the database file (mode 0600) when missing.
/// SQLite gives the WAL and shared-memory files the mode of the database file.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    let path_error = |reason: String| StoreError::Path {
        path: path.to_path_buf(),
        reason,
    };

    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|err| path_error(format!("creating its directory failed: {err}")))?;
    }

    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            warn_if_shared(path);
            Ok(())
        }
        Err(err) => Err(path_error(format!("creating the file failed: {err}"))),
    }
}

/// Logs a warning when group or others have any permission on an existing database file.
fn warn_if_shared(path: &Path) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };

    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "the database file is accessible to group or others; set its mode to 600"
        );
    }
}

fn open_error(path: &Path, err: sqlx::Error) -> StoreError {
    StoreError::Database(format!("failed to open {}: {err}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_match_folder() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();

        let embedded: Vec<String> = SQLITE_MIGRATIONS
            .iter()
            .map(|(version, description, _)| format!("{version:04}_{description}.sql"))
            .collect();
        assert_eq!(files, embedded);
    }
}
