//! `mcp_config.json`: which MCP servers to use, in any of the three formats operators have.
//!
//! - The original project's (langchain-mcp-adapters) format: server names at the top level,
//!   `{"xiaozhi": {"url": "http://127.0.0.1:8805/sse", "transport": "sse", "headers": {}}}`,
//!   with `transport` `streamable_http` or `sse` (or `stdio` with `command`/`args`).
//! - The common `{"mcpServers": {...}}` format of desktop MCP clients: `command`/`args`/`env`
//!   for a child process, or `url` (an `/sse` URL is legacy SSE, any other streamable HTTP).
//! - Xiaozhi's own server-side MCP settings, also under `mcpServers`, whose `transport` (or
//!   `type`) is `sse`, `streamable-http` or `http`, with an optional `timeout` in seconds that
//!   replaces `--tool-timeout-secs` for that server's tools.
//!
//! `//` and `/* */` comments and trailing commas are allowed (parsed by `jsonc-parser`), so the
//! shipped example can keep servers commented out. Keys the formats use for other things
//! (Xiaozhi's `des`) are ignored; a server with `"disabled": true` is skipped. Anything else
//! that cannot be understood is an error naming the server, reported before the box starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

/// The longest per-server tool time limit accepted: a day is already far past any tool call,
/// and a bound keeps every value a valid `Duration` (a huge float is not).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// One MCP server to connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerConfig {
    pub name: String,
    pub transport: McpTransport,
    /// Time limit of one tool call on this server, when it differs from the default.
    pub timeout: Option<Duration>,
}

/// How to reach an MCP server.
#[derive(Debug, Clone, PartialEq)]
pub enum McpTransport {
    StreamableHttp {
        url: String,
        headers: HeaderMap,
    },
    /// The legacy HTTP+SSE transport (Xiaozhi's tool server at `http://<xiaozhi>:8805/sse`).
    Sse {
        url: String,
        headers: HeaderMap,
    },
    /// A child process speaking MCP on its stdin and stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
}

/// An entry as written, in any of the formats.
#[derive(Deserialize)]
struct RawServer {
    url: Option<String>,
    transport: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    timeout: Option<f64>,
    #[serde(default)]
    disabled: bool,
}

/// The servers file's name in the config directory, unless `--mcp-config` or `agent.json`
/// names another.
pub const MCP_CONFIG_FILE: &str = "mcp_config.json";

/// Why the servers file cannot be used: reported as one line before the box starts.
#[derive(Debug, thiserror::Error)]
pub enum McpConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `reason` names the server and what is wrong with it.
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// The servers of the config file at `path`; a missing file means no MCP servers.
pub fn load(path: &Path) -> Result<Vec<McpServerConfig>, McpConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|reason| McpConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(McpConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The servers `text` names, in the order written (the order the model sees their tools in).
pub fn parse(text: &str) -> Result<Vec<McpServerConfig>, String> {
    let options = jsonc_parser::ParseOptions::default();
    let document: Value = jsonc_parser::parse_to_serde_value(text, &options)
        .map_err(|e| format!("not JSON (comments allowed): {e}"))?;
    let Value::Object(top) = document else {
        return Err("the top level must be a JSON object of servers".into());
    };
    // serde_json's maps sort their keys; read the document again for the written order.
    let (servers, only_objects) = match top.get("mcpServers") {
        Some(Value::Object(_)) => {
            let wrapped: WrappedServers = jsonc_parser::parse_to_serde_value(text, &options)
                .map_err(|e| format!("\"mcpServers\": {e}"))?;
            (wrapped.mcp_servers.0, false)
        }
        Some(_) => return Err("\"mcpServers\" must be an object of servers".into()),
        None => {
            let servers: OrderedObject =
                jsonc_parser::parse_to_serde_value(text, &options).map_err(|e| e.to_string())?;
            (servers.0, true)
        }
    };
    let mut parsed = Vec::new();
    for (name, entry) in servers {
        if !entry.is_object() {
            if only_objects {
                // A note or other setting beside the servers, as Xiaozhi's files have.
                continue;
            }
            return Err(format!("server {name:?}: must be an object"));
        }
        let raw: RawServer =
            serde_json::from_value(entry).map_err(|e| format!("server {name:?}: {e}"))?;
        if raw.disabled {
            continue;
        }
        parsed.push(server(&name, raw).map_err(|e| format!("server {name:?}: {e}"))?);
    }
    Ok(parsed)
}

#[derive(Deserialize)]
struct WrappedServers {
    #[serde(rename = "mcpServers")]
    mcp_servers: OrderedObject,
}

/// A JSON object's members in the order written.
struct OrderedObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OrderedObject, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(OrderedObject(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

fn server(name: &str, raw: RawServer) -> Result<McpServerConfig, String> {
    let timeout = match raw.timeout {
        None => None,
        Some(secs) if secs > 0.0 && secs <= MAX_TIMEOUT.as_secs_f64() => {
            Some(Duration::from_secs_f64(secs))
        }
        Some(secs) => {
            return Err(format!(
                "timeout {secs} must be a positive number of seconds, at most {}",
                MAX_TIMEOUT.as_secs()
            ));
        }
    };
    let declared = raw.transport.as_deref().or(raw.kind.as_deref());
    let kind = match declared.map(|t| t.to_ascii_lowercase().replace(['-', '_'], "")) {
        Some(t) if matches!(t.as_str(), "streamablehttp" | "http") => Kind::StreamableHttp,
        Some(t) if t == "sse" => Kind::Sse,
        Some(t) if t == "stdio" => Kind::Stdio,
        Some(_) => {
            return Err(format!(
                "unknown transport {:?}; use streamable_http, sse or stdio",
                declared.unwrap_or_default()
            ));
        }
        None if raw.command.is_some() => Kind::Stdio,
        None => match &raw.url {
            Some(url) if url.trim_end_matches('/').ends_with("/sse") => Kind::Sse,
            Some(_) => Kind::StreamableHttp,
            None => return Err("give a \"url\" or a \"command\"".into()),
        },
    };
    let transport = match kind {
        Kind::Stdio => McpTransport::Stdio {
            command: raw
                .command
                .filter(|c| !c.trim().is_empty())
                .ok_or("a stdio server needs a \"command\"")?,
            args: raw.args,
            env: raw.env,
        },
        Kind::StreamableHttp | Kind::Sse => {
            let url = raw.url.ok_or("an HTTP server needs a \"url\"")?;
            let parsed = reqwest::Url::parse(&url).map_err(|e| format!("url {url:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("url {url:?} must start with http:// or https://"));
            }
            let headers = header_map(&raw.headers)?;
            if kind == Kind::Sse {
                McpTransport::Sse { url, headers }
            } else {
                McpTransport::StreamableHttp { url, headers }
            }
        }
    };
    Ok(McpServerConfig {
        name: name.to_string(),
        transport,
        timeout,
    })
}

#[derive(PartialEq)]
enum Kind {
    StreamableHttp,
    Sse,
    Stdio,
}

fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is not valid"))?;
        // The value may be a secret (a bearer token): never echo it.
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("header {name:?} has a value that is not valid"))?;
        map.insert(header, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_original_format_with_comments() {
        let servers = parse(
            r#"{
                // Xiaozhi's tool server
                "xiaozhi": {"url": "http://127.0.0.1:8805/sse", "transport": "sse",
                            "headers": {"Authorization": "Bearer t"}},
                /* a second one */
                "calc": {"url": "http://127.0.0.1:9000/mcp", "transport": "streamable_http",},
            }"#,
        )
        .unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].name, "xiaozhi");
        let McpTransport::Sse { url, headers } = &servers[0].transport else {
            panic!("{:?}", servers[0])
        };
        assert_eq!(url, "http://127.0.0.1:8805/sse");
        assert_eq!(headers["authorization"], "Bearer t");
        assert!(matches!(
            servers[1].transport,
            McpTransport::StreamableHttp { .. }
        ));
    }

    #[test]
    fn reads_mcp_servers_and_xiaozhi_settings() {
        let servers = parse(
            r#"{
                "des": ["Xiaozhi keeps notes here"],
                "mcpServers": {
                    "everything": {"command": "npx", "args": ["-y", "server-everything"],
                                   "env": {"DEBUG": "1"}},
                    "remote": {"url": "http://127.0.0.1:1/mcp"},
                    "legacy": {"url": "http://127.0.0.1:1/sse/"},
                    "xz-http": {"url": "http://127.0.0.1:1/x", "transport": "streamable-http",
                                "timeout": 2.5},
                    "xz-plain": {"url": "http://127.0.0.1:1/y", "type": "http"},
                    "off": {"command": "nothing", "disabled": true}
                }
            }"#,
        )
        .unwrap();
        let names: Vec<_> = servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["everything", "remote", "legacy", "xz-http", "xz-plain"]
        );
        let McpTransport::Stdio { command, args, env } = &servers[0].transport else {
            panic!()
        };
        assert_eq!(
            (command.as_str(), args.len(), env["DEBUG"].as_str()),
            ("npx", 2, "1")
        );
        assert!(matches!(
            servers[1].transport,
            McpTransport::StreamableHttp { .. }
        ));
        assert!(matches!(servers[2].transport, McpTransport::Sse { .. }));
        assert!(matches!(
            servers[3].transport,
            McpTransport::StreamableHttp { .. }
        ));
        assert_eq!(servers[3].timeout, Some(Duration::from_millis(2500)));
        assert!(matches!(
            servers[4].transport,
            McpTransport::StreamableHttp { .. }
        ));
    }

    #[test]
    fn the_shipped_example_parses_to_no_servers() {
        let shipped = include_str!("../../../configs/mcp_config.json");
        assert_eq!(parse(shipped).unwrap(), []);
        // Uncommenting the Xiaozhi line gives the legacy SSE server.
        let xiaozhi = shipped.replace("// \"xiaozhi\"", "\"xiaozhi\"");
        let servers = parse(&xiaozhi).unwrap();
        assert_eq!(servers.len(), 1);
        assert!(
            matches!(&servers[0].transport, McpTransport::Sse { url, .. } if url == "http://127.0.0.1:8805/sse")
        );
    }

    #[test]
    fn explains_what_is_wrong_and_hides_header_values() {
        let cases = [
            (
                r#"{"a": {"url": "http://h/x", "transport": "websocket"}}"#,
                "unknown transport",
            ),
            (r#"{"a": {"transport": "sse"}}"#, "needs a \"url\""),
            (
                r#"{"a": {"headers": {}}}"#,
                "give a \"url\" or a \"command\"",
            ),
            (r#"{"a": {"url": "ftp://h/x"}}"#, "must start with http"),
            (r#"{"a": {"url": "http://h/x", "timeout": -1}}"#, "timeout"),
            (r#"{"mcpServers": {"a": "npx"}}"#, "must be an object"),
            (r#"[1]"#, "top level"),
            (r#"{"a": "#, "not JSON"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let error =
            parse(r#"{"a": {"url": "http://h/x", "headers": {"X": "secret\n"}}}"#).unwrap_err();
        assert!(
            error.contains("server \"a\"") && !error.contains("secret"),
            "{error}"
        );
        assert_eq!(load(Path::new("/nonexistent/mcp_config.json")).unwrap(), []);
    }

    #[test]
    fn a_timeout_too_large_for_a_duration_is_an_error_not_a_crash() {
        // Found by the mcp_config fuzz target: Duration::from_secs_f64 panics past u64 seconds.
        for timeout in ["1e300", "18446744073709551616", "1.7976931348623157e308"] {
            let text = format!(r#"{{"a": {{"url": "http://h/x", "timeout": {timeout}}}}}"#);
            let error = parse(&text).unwrap_err();
            assert!(error.contains("server \"a\": timeout"), "{error}");
        }
        // The largest limit accepted is a day; anything up to it is taken as written.
        let servers = parse(r#"{"a": {"url": "http://h/x", "timeout": 86400}}"#).unwrap();
        assert_eq!(servers[0].timeout, Some(Duration::from_secs(86_400)));
        assert!(parse(r#"{"a": {"url": "http://h/x", "timeout": 86401}}"#).is_err());
    }
}
