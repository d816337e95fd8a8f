//! Unix attestation of processes that connect to the workload socket: SO_PEERCRED gives the
//! peer's pid, uid and gid, and `/proc/<pid>` gives its supplementary groups and its executable's
//! path and SHA-256.
//!
//! PID reuse: the process that connected may exit and its pid may be given to another process
//! before `/proc` is read. Two checks guard against attesting the wrong process. The process
//! found under the pid must have started before the connection was accepted (a reused pid belongs
//! to a younger process), and its start time must be the same before and after its attributes are
//! read.
//!
//! This attestation cannot tell apart two processes of the same user running the same binary.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use mayfly_domain::decide::Attestation;
use sha2::{Digest, Sha256};

/// The peer as the kernel reported it when the connection was accepted.
#[derive(Debug, Clone, Copy)]
pub struct PeerAtAccept {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// Time since boot when the connection was accepted, in clock ticks.
    pub accepted_at_ticks: Option<u64>,
}

/// Why a peer could not be attested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnixAttestationError {
    /// The kernel gave no pid for the peer.
    #[error("the peer's pid is unknown")]
    NoPid,
    /// `/proc/<pid>` could not be read: the process has exited.
    #[error("process {pid} could not be inspected: {reason}")]
    Proc { pid: i32, reason: String },
    /// The pid now belongs to a process that started after the connection: the caller exited and
    /// its pid was reused.
    #[error("process {pid} started after the connection was accepted: its pid was reused")]
    PidReused { pid: i32 },
}

/// Identifies one version of a file: device, inode, size, and the modification and status
/// change times in seconds and nanoseconds. The owner of a file can set its modification time
/// back after rewriting it, but the kernel sets the status change time on every write.
type FileVersion = (u64, u64, u64, (i64, i64), (i64, i64));

/// Hashes executables, caching each hash by [`FileVersion`].
pub struct ExecutableHasher {
    max_bytes: u64,
    cache: Mutex<HashMap<FileVersion, Option<String>>>,
}

impl ExecutableHasher {
    pub fn new(max_bytes: u64) -> ExecutableHasher {
        ExecutableHasher {
            max_bytes,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the hex SHA-256 of the file, or `None` when it is larger than the limit.
    fn hash(&self, file: &mut File) -> std::io::Result<Option<String>> {
        let metadata = file.metadata()?;
        let key = (
            metadata.dev(),
            metadata.ino(),
            metadata.size(),
            (metadata.mtime(), metadata.mtime_nsec()),
            (metadata.ctime(), metadata.ctime_nsec()),
        );
        if let Some(cached) = self
            .cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).cloned())
        {
            return Ok(cached);
        }
        let hash = if metadata.size() > self.max_bytes {
            None
        } else {
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = file.read(&mut buffer)?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
            }
            Some(hex::encode(hasher.finalize()))
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 4096 {
                cache.clear();
            }
            cache.insert(key, hash.clone());
        }
        Ok(hash)
    }
}

/// Reads the peer's attributes. Runs blocking file I/O: call it from `spawn_blocking`.
pub fn attest(
    peer: PeerAtAccept,
    hasher: &ExecutableHasher,
) -> Result<BTreeMap<String, Vec<String>>, UnixAttestationError> {
    let pid = peer.pid.ok_or(UnixAttestationError::NoPid)?;
    let proc_error = |reason: std::io::Error| UnixAttestationError::Proc {
        pid,
        reason: reason.to_string(),
    };

    let started = process_start_ticks(pid).map_err(proc_error)?;
    if let Some(accepted) = peer.accepted_at_ticks
        && started > accepted
    {
        return Err(UnixAttestationError::PidReused { pid });
    }

    // A binary replaced on disk reads as "/path (deleted)"; the marker stays, so an exact path
    // rule no longer matches it.
    let path = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(proc_error)?;
    let mut executable = File::open(format!("/proc/{pid}/exe")).map_err(proc_error)?;
    let sha256 = hasher.hash(&mut executable).map_err(proc_error)?;
    let groups = supplementary_groups(pid).map_err(proc_error)?;

    if process_start_ticks(pid).map_err(proc_error)? != started {
        return Err(UnixAttestationError::PidReused { pid });
    }

    let mut attributes = BTreeMap::new();
    attributes.insert("uid".to_string(), vec![peer.uid.to_string()]);
    attributes.insert("gid".to_string(), vec![peer.gid.to_string()]);
    attributes.insert("pid".to_string(), vec![pid.to_string()]);
    attributes.insert(
        "path".to_string(),
        vec![path.to_string_lossy().into_owned()],
    );
    if !groups.is_empty() {
        attributes.insert("groups".to_string(), groups);
    }
    if let Some(sha256) = sha256 {
        attributes.insert("sha256".to_string(), vec![sha256]);
    }
    Ok(attributes)
}

/// Builds attestations for every `unix` trust provider from the peer's attributes.
pub fn attestations(
    config: &mayfly_domain::config::Config,
    attributes: &BTreeMap<String, Vec<String>>,
) -> Vec<Attestation> {
    config
        .trust_providers
        .values()
        .filter(|provider| matches!(provider, mayfly_domain::resources::TrustProvider::Unix(_)))
        .map(|provider| Attestation {
            trust_provider: provider.name().to_string(),
            attributes: attributes.clone(),
        })
        .collect()
}

/// Returns the time since boot in clock ticks, the unit of a process's start time.
pub fn uptime_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    // Rounded up, so a process started within the current tick still counts as older.
    Some((seconds * clock_ticks_per_second() as f64).ceil() as u64 + 1)
}

fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Reads the supplementary group ids from the `Groups:` line of `/proc/<pid>/status`.
fn supplementary_groups(pid: i32) -> std::io::Result<Vec<String>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let groups = status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|list| list.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    Ok(groups)
}

/// Reads field 22 of `/proc/<pid>/stat`, the process start time in clock ticks after boot.
fn process_start_ticks(pid: i32) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after_name
        .split_whitespace()
        .nth(19)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| std::io::Error::other("unexpected /proc stat format"))
}
