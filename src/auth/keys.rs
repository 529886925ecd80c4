//! API keys: who may call the API (and log in to the viewer).
//!
//! Keys come from `FAST_AUTH_KEYS`. With none configured the box must not run open by
//! accident, so the first start generates a key, keeps it in `<data-dir>/api_key` (mode 0600)
//! and prints it once; later starts reuse it. `--no-auth` opens everything, with a loud
//! warning. Keys are compared in constant time against every configured key.
//!
//! Every clone of a set of keys shares one [`AuthBrake`], so the API and the viewer of one
//! process count an address's wrong keys together: guessing on both ports is no faster.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::throttle::{AuthBrake, Refusal};
use crate::redact::Secret;

/// The accepted keys, or open access.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    keys: Arc<Vec<Secret>>,
    open: bool,
    brake: Arc<AuthBrake>,
}

/// Where the keys came from, for the start-up log.
#[derive(Debug, PartialEq, Eq)]
pub enum KeySource {
    Environment(usize),
    StoredFile,
    Generated,
    Open,
}

const KEY_FILE: &str = "api_key";

impl KeySource {
    /// Tells the operator where the keys come from. A just-generated key is printed once, on
    /// stdout rather than the log: the only time it is shown.
    pub fn announce(&self, keys: &ApiKeys, data_dir: &Path) {
        let file = data_dir.join(KEY_FILE);
        match self {
            KeySource::Environment(n) => tracing::info!("API keys: {n} from FAST_AUTH_KEYS"),
            KeySource::StoredFile => tracing::info!(
                "API key: the one in {} (set FAST_AUTH_KEYS to use your own)",
                file.display()
            ),
            KeySource::Generated => {
                if let Some(key) = keys.first() {
                    crate::logging::console_line(format_args!(
                        "\nNo FAST_AUTH_KEYS set: generated an API key and kept it in {}\n\n    {}\n\n\
                         Give it to Xiaozhi as the AliBL api_key, to OpenAI clients, and use it to log in\n\
                         to the viewer. It is not shown again.\n",
                        file.display(),
                        key.expose()
                    ));
                }
            }
            KeySource::Open => tracing::warn!(
                "!!! --no-auth: the API is OPEN to anyone who can reach this port, and spends \
                 your model key. Only use this on a closed network. !!!"
            ),
        }
    }
}

impl ApiKeys {
    /// Resolves the keys for a server: configured keys, else the data-dir key (created on
    /// first start), else nothing at all when `no_auth`.
    pub fn resolve(
        configured: &[Secret],
        no_auth: bool,
        data_dir: &Path,
    ) -> std::io::Result<(ApiKeys, KeySource)> {
        if no_auth {
            return Ok((ApiKeys::open(), KeySource::Open));
        }
        if !configured.is_empty() {
            return Ok((
                ApiKeys::from_keys(configured.to_vec()),
                KeySource::Environment(configured.len()),
            ));
        }
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok((
                ApiKeys::from_keys(vec![Secret::new(text.trim())]),
                KeySource::StoredFile,
            )),
            Ok(_) => Err(std::io::Error::other(format!(
                "{} is empty; delete it to generate a new key",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)?;
                let key = generate_key()?;
                write_private(&path, &key)?;
                Ok((
                    ApiKeys::from_keys(vec![Secret::new(key)]),
                    KeySource::Generated,
                ))
            }
            Err(e) => Err(e),
        }
    }

    pub fn from_keys(keys: Vec<Secret>) -> ApiKeys {
        ApiKeys {
            keys: Arc::new(keys),
            open: false,
            brake: Arc::default(),
        }
    }

    pub fn open() -> ApiKeys {
        ApiKeys {
            keys: Arc::new(Vec::new()),
            open: true,
            brake: Arc::default(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The first key, to print once when it was just generated.
    pub fn first(&self) -> Option<&Secret> {
        self.keys.first()
    }

    /// Whether `candidate` is one of the keys. Every key is compared, in constant time, so the
    /// answer's timing says nothing about which key or how much of it matched.
    pub fn verify(&self, candidate: &str) -> bool {
        if self.open {
            return true;
        }
        let mut ok = subtle::Choice::from(0u8);
        for key in self.keys.iter() {
            ok |= key.expose().as_bytes().ct_eq(candidate.as_bytes());
        }
        ok.into()
    }

    /// Checks an `Authorization` header value (`Bearer <key>`).
    pub fn verify_header(&self, header: Option<&str>) -> bool {
        if self.open {
            return true;
        }
        match header.and_then(bearer_token) {
            Some(token) => self.verify(token),
            None => false,
        }
    }
}

impl ApiKeys {
    /// Lets a request from `client` to `path` in when `candidate` is a key. A wrong key counts
    /// against the address (see [`AuthBrake`]); a good key is never braked.
    pub fn admit(&self, candidate: &str, client: IpAddr, path: &str) -> Result<(), Refusal> {
        if self.verify(candidate) {
            Ok(())
        } else {
            Err(self.brake.failed(client, path))
        }
    }

    /// [`ApiKeys::admit`] for an `Authorization` header. No header at all is refused without
    /// counting: nothing was guessed.
    pub fn admit_header(
        &self,
        header: Option<&str>,
        client: IpAddr,
        path: &str,
    ) -> Result<(), Refusal> {
        if self.verify_header(header) {
            Ok(())
        } else if header.is_none() {
            Err(Refusal::WrongKey)
        } else {
            Err(self.brake.failed(client, path))
        }
    }
}

/// The token of a `Bearer` authorization value (scheme case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn generate_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("la-{hex}"))
}

fn write_private(path: &Path, key: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_any_configured_key_and_nothing_else() {
        let keys = ApiKeys::from_keys(vec![Secret::new("alpha"), Secret::new("beta")]);
        assert!(keys.verify("alpha"));
        assert!(keys.verify("beta"));
        assert!(!keys.verify("alph"));
        assert!(!keys.verify(""));
        assert!(keys.verify_header(Some("Bearer beta")));
        assert!(keys.verify_header(Some("bearer  alpha ")));
        assert!(!keys.verify_header(Some("Basic alpha")));
        assert!(!keys.verify_header(None));
    }

    #[test]
    fn a_braked_address_still_gets_in_with_a_good_key_on_any_clone() {
        let keys = ApiKeys::from_keys(vec![Secret::new("alpha")]);
        let viewer = keys.clone();
        let guesser: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(
                keys.admit_header(Some("Bearer nope"), guesser, "/v1/chat/completions"),
                Err(Refusal::WrongKey)
            );
        }
        // The viewer's clone shares the count.
        assert!(matches!(
            viewer.admit("nope", guesser, "/login"),
            Err(Refusal::Throttled { .. })
        ));
        assert_eq!(viewer.admit("alpha", guesser, "/login"), Ok(()));
        assert_eq!(
            keys.admit_header(Some("Bearer alpha"), guesser, "/v1/chat/completions"),
            Ok(())
        );
        // No header is refused but not counted (nor braked).
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        for _ in 0..20 {
            assert_eq!(keys.admit_header(None, other, "/"), Err(Refusal::WrongKey));
        }
    }

    #[test]
    fn generates_a_private_key_once_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = ApiKeys::resolve(&[], false, dir.path()).unwrap();
        assert_eq!(source, KeySource::Generated);
        let key = first.first().unwrap().expose().to_string();
        assert!(key.starts_with("la-") && key.len() == 51);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, source) = ApiKeys::resolve(&[], false, dir.path()).unwrap();
        assert_eq!(source, KeySource::StoredFile);
        assert!(again.verify(&key));
    }

    #[test]
    fn configured_keys_win_and_no_auth_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, source) = ApiKeys::resolve(&[Secret::new("k")], false, dir.path()).unwrap();
        assert_eq!(source, KeySource::Environment(1));
        assert!(keys.verify("k") && !keys.verify("x"));
        assert!(!dir.path().join(KEY_FILE).exists());
        let (open, _) = ApiKeys::resolve(&[], true, dir.path()).unwrap();
        assert!(open.is_open() && open.verify("anything"));
    }
}
