//! The `file` destination: one record per line, appended and synced to disk before the cursor
//! moves. When log rotation renames or deletes the file, the next batch opens a new file at the
//! configured path.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use async_trait::async_trait;
use mayfly_domain::log_stream::LogStream;

use super::destination::{DeliveryError, Destination, Item};

pub struct FileDestination {
    path: PathBuf,
    /// The open file and its (device, inode), to notice rotation.
    open: Option<(File, (u64, u64))>,
}

impl FileDestination {
    pub fn new(stream: &LogStream) -> Result<FileDestination, DeliveryError> {
        let path = stream
            .path
            .clone()
            .ok_or_else(|| DeliveryError::Settings("a file log stream needs a path".to_string()))?;
        Ok(FileDestination {
            path: PathBuf::from(path),
            open: None,
        })
    }

    /// Returns the open file, reopening it when the path now names another file or none.
    fn file(&mut self) -> Result<&mut File, DeliveryError> {
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|metadata| (metadata.dev(), metadata.ino()));
        let rotated = match (&self.open, current) {
            (Some((_, identity)), Some(now)) => *identity != now,
            _ => true,
        };
        if rotated {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .map_err(|source| self.io_error("opening", source))?;
            let metadata = file
                .metadata()
                .map_err(|source| self.io_error("reading the metadata of", source))?;
            if self.open.is_some() {
                tracing::info!(path = %self.path.display(), "log stream file was rotated; writing to a new file");
            }
            self.open = Some((file, (metadata.dev(), metadata.ino())));
        }
        match &mut self.open {
            Some((file, _)) => Ok(file),
            None => Err(DeliveryError::Settings(
                "the log stream file is not open".to_string(),
            )),
        }
    }

    fn io_error(&self, action: &str, source: std::io::Error) -> DeliveryError {
        DeliveryError::Io {
            context: format!("{action} {}", self.path.display()),
            source,
        }
    }
}

#[async_trait]
impl Destination for FileDestination {
    async fn send(&mut self, items: &[Item]) -> Result<(), DeliveryError> {
        let mut buffer = String::new();
        for item in items {
            buffer.push_str(&item.line);
            buffer.push('\n');
        }

        self.file()?;
        let Some((mut file, identity)) = self.open.take() else {
            return Err(DeliveryError::Settings(
                "the log stream file is not open".to_string(),
            ));
        };
        // The write and fsync run on the blocking pool, so a slow disk stalls only this stream.
        let written = tokio::task::spawn_blocking(move || {
            let result = file
                .write_all(buffer.as_bytes())
                .and_then(|()| file.sync_data());
            (file, result)
        })
        .await;
        match written {
            Ok((file, Ok(()))) => {
                self.open = Some((file, identity));
                Ok(())
            }
            // The file stays closed, so the next batch reopens it in case the handle went stale.
            Ok((_, Err(source))) => Err(self.io_error("appending to", source)),
            Err(join_error) => Err(DeliveryError::Settings(format!(
                "the file write task failed: {join_error}"
            ))),
        }
    }
}
