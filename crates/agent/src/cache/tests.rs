#![allow(clippy::unwrap_used)]

use super::*;

fn svid(token: &str, issued: i64, expires: i64) -> IssuedSvid {
    IssuedSvid {
        token: token.to_string(),
        spiffe_id: "spiffe://mayfly.local/web".to_string(),
        issued_at: Timestamp::from_second(issued).unwrap(),
        expires_at: Timestamp::from_second(expires).unwrap(),
    }
}

fn attributes() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([("uid".to_string(), vec!["1000".to_string()])])
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

fn audiences(list: &[&str]) -> Vec<String> {
    list.iter().map(|audience| audience.to_string()).collect()
}

fn token_of(lookup: Lookup) -> Option<String> {
    match lookup {
        Lookup::Hit { svid, .. } => Some(svid.token),
        Lookup::Miss => None,
    }
}

#[test]
fn cache_key_split_audiences_do_not_collide() {
    let cache = SvidCache::new(16);
    let first = CacheKey::new(&attributes(), &audiences(&["ab", "cd"]));
    let second = CacheKey::new(&attributes(), &audiences(&["a", "bcd"]));
    assert_ne!(first, second);
    cache.insert(first.clone(), svid("first", 1000, 1300), at(1000));
    assert_eq!(token_of(cache.lookup(&second, at(1001))), None);
    assert_eq!(
        token_of(cache.lookup(&first, at(1001))).as_deref(),
        Some("first")
    );
}

#[test]
fn cache_key_ignores_audience_order() {
    let first = CacheKey::new(&attributes(), &audiences(&["a", "b", "a"]));
    let second = CacheKey::new(&attributes(), &audiences(&["b", "a"]));
    assert_eq!(first, second);
}

#[test]
fn cache_refreshes_after_half_lifetime_once() {
    let cache = SvidCache::new(16);
    let key = CacheKey::new(&attributes(), &audiences(&["a"]));
    cache.insert(key.clone(), svid("t", 1000, 1100), at(1000));
    assert!(matches!(
        cache.lookup(&key, at(1039)),
        Lookup::Hit { refresh: false, .. }
    ));
    assert!(matches!(
        cache.lookup(&key, at(1061)),
        Lookup::Hit { refresh: true, .. }
    ));
    assert!(matches!(
        cache.lookup(&key, at(1062)),
        Lookup::Hit { refresh: false, .. }
    ));
    cache.refresh_failed(&key);
    assert!(matches!(
        cache.lookup(&key, at(1063)),
        Lookup::Hit { refresh: true, .. }
    ));
}

#[test]
fn cache_drops_expired_entry() {
    let cache = SvidCache::new(16);
    let key = CacheKey::new(&attributes(), &audiences(&["a"]));
    cache.insert(key.clone(), svid("t", 1000, 1100), at(1000));
    assert_eq!(token_of(cache.lookup(&key, at(1096))), None);
    assert!(cache.is_empty());
}

#[test]
fn cache_size_is_bounded() {
    let cache = SvidCache::new(2);
    for (index, audience) in ["a", "b", "c"].iter().enumerate() {
        let key = CacheKey::new(&attributes(), &audiences(&[audience]));
        cache.insert(key, svid(audience, 1000, 1100 + index as i64), at(1000));
    }
    assert_eq!(cache.len(), 2);
    let soonest = CacheKey::new(&attributes(), &audiences(&["a"]));
    assert_eq!(
        token_of(cache.lookup(&soonest, at(1001))),
        None,
        "the entry expiring first is evicted"
    );
}

/// Builds a JWT-shaped token whose header names `kid`. The cache reads only the header.
fn token_signed_by(kid: &str) -> String {
    use base64::Engine;
    let header = serde_json::json!({"alg": "ES256", "kid": kid}).to_string();
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header);
    format!("{encoded}.e30.c2ln")
}

#[test]
fn removed_key_drops_its_svids() {
    let cache = SvidCache::new(16);
    let old = CacheKey::new(&attributes(), &audiences(&["old"]));
    let current = CacheKey::new(&attributes(), &audiences(&["current"]));
    let unnamed = CacheKey::new(&attributes(), &audiences(&["unnamed"]));
    cache.insert(
        old.clone(),
        svid(&token_signed_by("k1"), 1000, 1300),
        at(1000),
    );
    cache.insert(
        current.clone(),
        svid(&token_signed_by("k2"), 1000, 1300),
        at(1000),
    );
    cache.insert(unnamed.clone(), svid("not-a-jwt", 1000, 1300), at(1000));

    let published = HashSet::from(["k2".to_string()]);
    assert_eq!(cache.retain_signed_by(&published), 1);
    assert_eq!(token_of(cache.lookup(&old, at(1001))), None);
    assert_eq!(
        token_of(cache.lookup(&current, at(1001))),
        Some(token_signed_by("k2"))
    );
    assert_eq!(
        token_of(cache.lookup(&unnamed, at(1001))),
        Some("not-a-jwt".to_string())
    );
}
