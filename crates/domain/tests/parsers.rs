//! Property tests for the parsers of untrusted text: no input makes them panic, and what they
//! accept survives a round trip.
#![allow(clippy::unwrap_used)]

use mayfly_domain::config_file;
use mayfly_domain::duration::Seconds;
use mayfly_domain::spiffe::SpiffeId;
use proptest::prelude::*;

proptest! {
    #[test]
    fn spiffe_id_parse_round_trips(text in "\\PC{0,80}") {
        if let Ok(id) = SpiffeId::parse(&text) {
            let again = SpiffeId::parse(id.as_str()).unwrap();
            prop_assert_eq!(again.as_str(), id.as_str());
            prop_assert!(id.trust_domain().bytes().all(|b| !b.is_ascii_uppercase()));
        }
    }

    #[test]
    fn spiffe_id_accepts_generated_valid_ids(
        domain in "[a-z0-9][a-z0-9._-]{0,30}",
        segments in proptest::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,10}", 0..5),
    ) {
        let segments: Vec<String> = segments.into_iter().filter(|s| s != "." && s != "..").collect();
        let path: String = segments.iter().map(|segment| format!("/{segment}")).collect();
        let text = format!("spiffe://{domain}{path}");
        let id = SpiffeId::parse(&text);
        prop_assert!(id.is_ok(), "{} was rejected: {:?}", text, id);
        let id = id.unwrap();
        prop_assert_eq!(id.path(), path.as_str());
    }

    #[test]
    fn duration_parse_round_trips(text in "\\PC{0,12}") {
        if let Ok(seconds) = Seconds::parse(&text) {
            prop_assert_eq!(Seconds::parse(&seconds.to_string()), Ok(seconds));
        }
    }

    #[test]
    fn config_file_parse_never_panics(text in "\\PC{0,300}") {
        let _ = config_file::parse("fuzz.yaml", &text);
        let _ = config_file::expand_variables("fuzz.yaml", &text, |_| Some("x".to_string()));
    }

    #[test]
    fn config_file_parse_survives_yaml_shapes(
        kind in prop_oneof!["trust_providers", "client_workloads", "server_workloads", "credential_providers", "access_conditions", "access_policies"],
        body in "[a-z_]{1,8}: [\\[\\]{}a-z0-9:/.,\" *-]{0,30}",
    ) {
        let text = format!("{kind}:\n  - name: a\n    {body}\n");
        let _ = config_file::parse("fuzz.yaml", &text);
    }
}
