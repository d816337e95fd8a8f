//! The JWT-SVID cache: one entry per (caller's attested attributes, audience set).
//!
//! The key is structured (a sorted attribute map and a sorted, deduplicated audience list), not
//! a joined string, so audiences `["ab", "cd"]` and `["a", "bcd"]` are different keys. The key
//! uses the attributes rather than the SPIFFE ID, because the agent learns the SPIFFE ID only
//! from the server's decision. The attributes include the pid, so each process gets its own
//! entries.
//!
//! An entry is refreshed in the background once about half its lifetime has passed (40 to 60
//! percent, at random, so entries issued together do not renew together). Until it expires, it
//! is returned at once, even while a refresh is waiting on a slow or unreachable server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

use crate::client::IssuedSvid;

/// Entries within this long of expiry are not returned.
const EXPIRY_MARGIN: SignedDuration = SignedDuration::from_secs(5);

/// The cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    attributes: Vec<(String, Vec<String>)>,
    audiences: Vec<String>,
}

impl CacheKey {
    /// Builds the key of a caller and a requested audience list, in any order.
    pub fn new(attributes: &BTreeMap<String, Vec<String>>, audiences: &[String]) -> CacheKey {
        let mut audiences = audiences.to_vec();
        audiences.sort();
        audiences.dedup();
        CacheKey {
            attributes: attributes
                .iter()
                .map(|(name, values)| (name.clone(), values.clone()))
                .collect(),
            audiences,
        }
    }
}

struct Entry {
    svid: IssuedSvid,
    refresh_at: Timestamp,
    refreshing: bool,
}

/// The result of a lookup.
pub enum Lookup {
    /// A valid SVID. When `refresh` is true, the caller should start a background refresh.
    Hit { svid: IssuedSvid, refresh: bool },
    /// Nothing valid: fetch synchronously.
    Miss,
}

/// A bounded cache of JWT-SVIDs.
pub struct SvidCache {
    max_entries: usize,
    entries: Mutex<HashMap<CacheKey, Entry>>,
}

impl SvidCache {
    /// Builds a cache that keeps at most `max_entries` SVIDs.
    pub fn new(max_entries: usize) -> SvidCache {
        SvidCache {
            max_entries: max_entries.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Looks up `key` at `now`. A hit past its refresh time is marked as refreshing, so only
    /// one caller starts the refresh.
    pub fn lookup(&self, key: &CacheKey, now: Timestamp) -> Lookup {
        let Ok(mut entries) = self.entries.lock() else {
            return Lookup::Miss;
        };
        let Some(entry) = entries.get_mut(key) else {
            return Lookup::Miss;
        };
        if entry.svid.expires_at - EXPIRY_MARGIN <= now {
            entries.remove(key);
            return Lookup::Miss;
        }
        let refresh = now >= entry.refresh_at && !entry.refreshing;
        if refresh {
            entry.refreshing = true;
        }
        Lookup::Hit {
            svid: entry.svid.clone(),
            refresh,
        }
    }

    /// Stores `svid` under `key`, evicting expired entries and then the soonest to expire when
    /// the cache is full.
    pub fn insert(&self, key: CacheKey, svid: IssuedSvid, now: Timestamp) {
        let lifetime = (svid.expires_at - svid.issued_at).as_secs_f64().max(0.0);
        let fraction = rand::random_range(0.4..0.6);
        let refresh_at = svid.issued_at + SignedDuration::from_secs_f64(lifetime * fraction);
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if !entries.contains_key(&key) && entries.len() >= self.max_entries {
            entries.retain(|_, entry| entry.svid.expires_at - EXPIRY_MARGIN > now);
            if entries.len() >= self.max_entries
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.svid.expires_at)
                    .map(|(key, _)| key.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            key,
            Entry {
                svid,
                refresh_at,
                refreshing: false,
            },
        );
    }

    /// Allows another refresh of `key` after a failed one.
    pub fn refresh_failed(&self, key: &CacheKey) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(key)
        {
            entry.refreshing = false;
        }
    }

    /// Drops the entries whose SVID names in its header a `kid` outside `published`, and returns
    /// how many were dropped. An SVID whose `kid` cannot be read is kept.
    pub fn retain_signed_by(&self, published: &HashSet<String>) -> usize {
        let Ok(mut entries) = self.entries.lock() else {
            return 0;
        };
        let before = entries.len();
        entries.retain(|_, entry| {
            unverified_kid(&entry.svid.token).is_none_or(|kid| published.contains(&kid))
        });
        before - entries.len()
    }

    /// Returns the number of entries.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .map(|entries| entries.len())
            .unwrap_or(0)
    }

    /// Returns whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the `kid` from the header of a JWT without verifying anything.
fn unverified_kid(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    header.get("kid")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests;
