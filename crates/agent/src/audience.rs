//! Checks of the audiences a workload requests, done in the agent so that an oversized or
//! malformed list never reaches the server or its audit log.

/// Maximum number of audiences in one JWT-SVID request.
pub const MAX_AUDIENCES: usize = 32;

/// Maximum length of one audience, in bytes.
pub const MAX_AUDIENCE_BYTES: usize = 255;

/// Checks `audiences` and returns a message naming the first invalid entry by its index.
pub fn check_audiences(audiences: &[String]) -> Result<(), String> {
    if audiences.is_empty() {
        return Err("audience is required: request at least one audience".to_string());
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(format!(
            "audience has {} entries; at most {MAX_AUDIENCES} are allowed",
            audiences.len()
        ));
    }
    for (index, audience) in audiences.iter().enumerate() {
        if audience.is_empty() {
            return Err(format!("audience[{index}] is empty"));
        }
        if audience.len() > MAX_AUDIENCE_BYTES {
            return Err(format!(
                "audience[{index}] is {} bytes long; at most {MAX_AUDIENCE_BYTES} are allowed",
                audience.len()
            ));
        }
        if audience.chars().any(char::is_control) {
            return Err(format!(
                "audience[{index}] {:?} contains a control character",
                audience
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn list(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn valid_audiences_pass() {
        assert_eq!(check_audiences(&list(&["payments", "ledger"])), Ok(()));
        let longest = "a".repeat(MAX_AUDIENCE_BYTES);
        assert_eq!(check_audiences(&[longest]), Ok(()));
        assert_eq!(
            check_audiences(&vec!["a".to_string(); MAX_AUDIENCES]),
            Ok(())
        );
    }

    #[test]
    fn invalid_audiences_name_the_entry() {
        let cases = [
            (list(&[]), "audience is required"),
            (list(&["a", ""]), "audience[1] is empty"),
            (
                list(&["a", "b\nc"]),
                "audience[1] \"b\\nc\" contains a control character",
            ),
            (
                vec!["a".repeat(MAX_AUDIENCE_BYTES + 1)],
                "audience[0] is 256 bytes long",
            ),
            (
                vec!["a".to_string(); MAX_AUDIENCES + 1],
                "audience has 33 entries",
            ),
        ];
        for (audiences, expected) in cases {
            let message = check_audiences(&audiences).unwrap_err();
            assert!(message.starts_with(expected), "{message}");
        }
    }
}
