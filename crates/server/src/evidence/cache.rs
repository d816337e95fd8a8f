//! A cache of verified evidence tokens, keyed by the SHA-256 of the token, so a workload that
//! presents the same token again is not verified again until the token expires. Entries belong
//! to the configuration version they were verified under, and are served only under that version,
//! so a verification that was still running while a trust provider changed cannot put its token
//! back for later requests. The whole cache is also emptied when a trust provider changes.

use std::collections::HashMap;
use std::sync::Mutex;

use mayfly_domain::decide::Attestation;
use sha2::{Digest, Sha256};

/// Most tokens kept; when full, expired entries are dropped, and if none has expired the cache
/// starts over.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    attestations: Vec<Attestation>,
    expires_at: i64,
    version: i64,
}

/// Verified tokens and what they attested.
pub struct EvidenceCache {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Default for EvidenceCache {
    fn default() -> Self {
        EvidenceCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl EvidenceCache {
    /// Returns the attestations of a token verified under configuration `version` and not yet
    /// expired at `now`.
    pub fn get(&self, token: &str, now: i64, version: i64) -> Option<Vec<Attestation>> {
        let key = digest(token);
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(&key)?;
        (entry.expires_at > now && entry.version == version).then(|| entry.attestations.clone())
    }

    /// Remembers a token verified under configuration `version` until `expires_at` (Unix
    /// seconds).
    pub fn insert(
        &self,
        token: &str,
        attestations: Vec<Attestation>,
        expires_at: i64,
        now: i64,
        version: i64,
    ) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, entry| entry.expires_at > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            digest(token),
            Entry {
                attestations,
                expires_at,
                version,
            },
        );
    }

    /// Forgets every token; called when trust providers change.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .map(|entries| entries.len())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
