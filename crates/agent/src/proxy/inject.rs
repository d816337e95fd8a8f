//! Puts a credential into a request the way the server workload expects it: every header and
//! query parameter of the credential response's presentation is set, replacing any value the
//! application sent under the same name (a placeholder, typically).

use hyper::header::{HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::http::uri::PathAndQuery;

use crate::proxy::credentials::Injection;

/// Sets the injection's headers and query parameters on `parts`.
pub fn inject(parts: &mut Parts, injection: &Injection) -> Result<(), String> {
    for (name, value) in &injection.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            format!("the credential's header name {name:?} is not a valid HTTP header name")
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            format!("the credential for header {name} is not a valid HTTP header value")
        })?;
        // Keeps the value out of HPACK tables and out of hyper's debug output.
        value.set_sensitive(true);
        parts.headers.insert(name, value);
    }
    if !injection.query.is_empty() {
        let path = parts.uri.path();
        let query = replace_query(parts.uri.query(), &injection.query);
        let path_and_query: PathAndQuery = format!("{path}?{query}")
            .parse()
            .map_err(|error| format!("the request path with the credential is invalid: {error}"))?;
        let mut uri_parts = parts.uri.clone().into_parts();
        uri_parts.path_and_query = Some(path_and_query);
        parts.uri = hyper::Uri::from_parts(uri_parts)
            .map_err(|error| format!("the request URI with the credential is invalid: {error}"))?;
    }
    Ok(())
}

/// Returns `query` without the parameters named in `injected`, followed by the injected ones,
/// percent-encoded. The other parameters keep their order and encoding.
pub fn replace_query(query: Option<&str>, injected: &[(String, String)]) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let name: String = form_urlencoded::parse(format!("{raw_name}=").as_bytes())
            .next()
            .map(|(name, _)| name.into_owned())
            .unwrap_or_default();
        if !injected
            .iter()
            .any(|(injected_name, _)| *injected_name == name)
        {
            kept.push(pair);
        }
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in injected {
        serializer.append_pair(name, value);
    }
    let added = serializer.finish();
    if kept.is_empty() {
        added
    } else {
        format!("{}&{added}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_placeholder_is_replaced() {
        let injected = vec![("api_key".to_string(), "s3cr3t/+=".to_string())];
        assert_eq!(
            replace_query(Some("a=1&api_key=PLACEHOLDER&b=x%20y"), &injected),
            "a=1&b=x%20y&api_key=s3cr3t%2F%2B%3D"
        );
    }

    #[test]
    fn encoded_placeholder_name_is_replaced() {
        let injected = vec![("api key".to_string(), "v".to_string())];
        assert_eq!(replace_query(Some("api%20key=old"), &injected), "api+key=v");
    }

    #[test]
    fn empty_query_gets_parameter() {
        let injected = vec![("token".to_string(), "v".to_string())];
        assert_eq!(replace_query(None, &injected), "token=v");
    }
}
