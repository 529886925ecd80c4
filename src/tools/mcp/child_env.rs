//! The environment a stdio MCP server is started with.
//!
//! A stdio server is often a third-party package fetched by `npx` or `uvx`; it must not read
//! this process's secrets (`ALI_API_KEY`, `FAST_AUTH_KEYS`, `CONN_STR`, whatever else the
//! service file sets). So it starts with a cleared environment plus the few variables a
//! program needs to find its tools and home, as the official MCP SDKs do (the Python SDK's
//! `get_default_environment`, the TypeScript SDK's `getDefaultEnvironment`: `HOME`, `LOGNAME`,
//! `PATH`, `SHELL`, `TERM`, `USER`), plus the locale and temporary directory, plus the server's
//! own `env` from `mcp_config.json`, which wins.

use std::collections::BTreeMap;

/// Variables passed on from our environment when set.
pub const INHERITED_VARS: &[&str] = &[
    "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR",
];

/// The whole environment of a stdio server: the inherited safe set, then `configured`.
pub fn child_environment(configured: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    environment_from(|name| std::env::var(name).ok(), configured)
}

/// [`child_environment`] reading our variables through `ours`.
fn environment_from(
    ours: impl Fn(&str) -> Option<String>,
    configured: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = INHERITED_VARS
        .iter()
        .filter_map(|name| ours(name).map(|value| (name.to_string(), value)))
        // A value starting with `()` is an exported shell function, a known injection vector
        // (the SDKs skip these too).
        .filter(|(_, value)| !value.starts_with("()"))
        .collect();
    env.extend(configured.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_safe_set_and_the_configured_env_are_passed() {
        let ours = |name: &str| match name {
            "PATH" => Some("/usr/bin".to_string()),
            "HOME" => Some("/home/box".to_string()),
            "SHELL" => Some("() { :; }; echo pwned".to_string()),
            "ALI_API_KEY" | "FAST_AUTH_KEYS" | "CONN_STR" => Some("secret".to_string()),
            _ => None,
        };
        let configured = BTreeMap::from([
            ("HOME".to_string(), "/srv/tool".to_string()),
            ("API_TOKEN".to_string(), "for-this-server".to_string()),
        ]);
        let env = environment_from(ours, &configured);
        assert_eq!(
            env,
            BTreeMap::from([
                ("PATH".to_string(), "/usr/bin".to_string()),
                ("HOME".to_string(), "/srv/tool".to_string()),
                ("API_TOKEN".to_string(), "for-this-server".to_string()),
            ])
        );
    }
}
