//! What must never be printed, and the printable form of what may hold it.
//!
//! Keys and passwords live in [`Secret`], whose `Debug` hides the value, so a secret cannot
//! reach a log line by way of a struct's `Debug`. URLs (the upstream's, PostgreSQL's) may carry
//! a password or a key in their query, so the only form of a URL fit for a log line or an
//! error message is [`redact_url`]'s. A shared leaf: configuration, the model client, the
//! keys and export use it.

use std::fmt;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Hides the secrets of a URL, even when the rest does not parse: the user-info password, every
/// query value (an upstream may take its key as `?api_key=`, `?key=`, `?token=` or any other
/// name, so no value is trusted to be harmless) and a `password=` of the libpq `key=value` form.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_query(query)),
        None => tail.to_string(),
    };
    redact_password_params(&format!("{scheme}{authority}{tail}"))
}

/// `a=1&key=s3cret&flag` → `a=***&key=***&***`: names stay (they say what was set), values go.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=***"),
            None if pair.is_empty() => String::new(),
            None => "***".to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `password=secret` → `password=***`, wherever parameters are separated by `?`, `&` or spaces.
fn redact_password_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.to_ascii_lowercase().find("password=") {
        let starts_param = pos == 0 || matches!(rest.as_bytes()[pos - 1], b'?' | b'&' | b' ');
        let value_start = pos + "password=".len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        if starts_param {
            let value_end = rest.find(['&', ' ']).unwrap_or(rest.len());
            out.push_str("***");
            rest = &rest[value_end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_show_no_query_value_and_no_password() {
        assert_eq!(
            redact_url("https://llm.example/v1?api_key=sk-1&key=k2&token=t3&bare"),
            "https://llm.example/v1?api_key=***&key=***&token=***&***"
        );
        assert_eq!(
            redact_url("http://u:pw@127.0.0.1:8000/v1?x=1"),
            "http://u:***@127.0.0.1:8000/v1?x=***"
        );
        assert_eq!(redact_url("http://h/v1?"), "http://h/v1?");
        assert_eq!(redact_url("http://h/v1"), "http://h/v1");
    }
}
