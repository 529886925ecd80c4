//! API keys: who may call the API (and log in to the viewer).
//!
//! A request's key is accepted when it is one of `FAST_AUTH_KEYS`, one of the box's managed
//! keys (`<data-dir>/api_keys.json`, kept as hashes: [`super::key_store`], managed with
//! `lang-agent keys`), or the plaintext `<data-dir>/api_key` an older version generated. With
//! none of these the box must not run open by accident, so the first start makes a managed key
//! and prints it once, at once (before anything else can fail and lose it). `--no-auth` opens
//! everything, with a loud warning. Keys are compared in constant time against every key.
//!
//! A running server sees `keys add` and `keys revoke` without a restart: before a check it
//! looks at the key file's modification time (at most once a second) and re-reads it when
//! it moved.
//!
//! Every clone of a set of keys shares one [`AuthBrake`], so the API and the viewer of one
//! process count an address's wrong keys together: guessing on both ports is no faster.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use subtle::ConstantTimeEq;

use super::key_store::{KeyStore, KeyStoreError, sha256_hex};
use super::throttle::{AuthBrake, Refusal};
use crate::redact::Secret;

/// How often a check may look at the key file for changes.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// The plaintext key file older versions generated; still honoured.
const LEGACY_KEY_FILE: &str = "api_key";

/// The accepted keys, or open access.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    keys: Arc<KeySet>,
    brake: Arc<AuthBrake>,
}

#[derive(Debug)]
struct KeySet {
    open: bool,
    /// `FAST_AUTH_KEYS` and a legacy `api_key` file: compared as they are.
    plain: Vec<Secret>,
    /// The managed keys' file, when the keys come from a data directory.
    store: Option<KeyStore>,
    managed: Mutex<Managed>,
}

/// The managed keys as last read, and when the file was last looked at.
#[derive(Debug, Default)]
struct Managed {
    hashes: Vec<String>,
    modified: Option<SystemTime>,
    checked: Option<Instant>,
}

/// Where the keys came from, for the start-up log.
#[derive(Debug)]
pub enum KeySource {
    /// Keys were there: from the environment, the managed file and a legacy file.
    Configured {
        environment: usize,
        managed: usize,
        legacy: bool,
    },
    /// None were: this key was just made (and is printed once).
    Generated(Secret),
    Open,
}

impl KeySource {
    /// Tells the operator where the keys come from. A just-made key is printed once, on
    /// stdout rather than the log: the only time it is shown.
    pub fn announce(&self, data_dir: &Path) {
        let store = KeyStore::in_dir(data_dir);
        match self {
            KeySource::Configured {
                environment,
                managed,
                legacy,
            } => tracing::info!(
                "API keys: {environment} from FAST_AUTH_KEYS, {managed} in {}{} (lang-agent keys list)",
                store.path().display(),
                if *legacy {
                    ", and the older api_key file"
                } else {
                    ""
                }
            ),
            KeySource::Generated(key) => crate::logging::console_line(format_args!(
                "\nNo API key yet: made one, kept (as a hash) in {}\n\n    {}\n\n\
                 Give it to Xiaozhi as the AliBL api_key, to OpenAI clients, and use it to log in\n\
                 to the viewer. It is not shown again: `lang-agent keys add NAME` makes more.\n",
                store.path().display(),
                key.expose()
            )),
            KeySource::Open => tracing::warn!(
                "!!! --no-auth: the API is OPEN to anyone who can reach this port, and spends \
                 your model key. Only use this on a closed network. !!!"
            ),
        }
    }
}

impl ApiKeys {
    /// Resolves the keys for a server: `configured` (`FAST_AUTH_KEYS`), the data directory's
    /// managed keys and legacy key file, else a key made now; nothing at all when `no_auth`.
    pub fn resolve(
        configured: &[Secret],
        no_auth: bool,
        data_dir: &Path,
    ) -> Result<(ApiKeys, KeySource), KeyStoreError> {
        if no_auth {
            return Ok((ApiKeys::open(), KeySource::Open));
        }
        let store = KeyStore::in_dir(data_dir);
        let mut plain = configured.to_vec();
        let legacy_path = data_dir.join(LEGACY_KEY_FILE);
        let legacy = match std::fs::read_to_string(&legacy_path) {
            Ok(text) if !text.trim().is_empty() => Some(Secret::new(text.trim())),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(KeyStoreError::Io {
                    path: legacy_path,
                    source,
                });
            }
        };
        let has_legacy = legacy.is_some();
        plain.extend(legacy);
        let mut managed = store.list()?.len();
        let source = if plain.is_empty() && managed == 0 {
            let key = store.add("first")?;
            managed = 1;
            KeySource::Generated(Secret::new(key))
        } else {
            KeySource::Configured {
                environment: configured.len(),
                managed,
                legacy: has_legacy,
            }
        };
        let keys = ApiKeys::with(false, plain, Some(store));
        debug_assert!(managed == 0 || !keys.managed_hashes().is_empty());
        Ok((keys, source))
    }

    /// Exactly these keys (tests, `viewer --db postgres://…` with `FAST_AUTH_KEYS`).
    pub fn from_keys(keys: Vec<Secret>) -> ApiKeys {
        ApiKeys::with(false, keys, None)
    }

    pub fn open() -> ApiKeys {
        ApiKeys::with(true, Vec::new(), None)
    }

    fn with(open: bool, plain: Vec<Secret>, store: Option<KeyStore>) -> ApiKeys {
        ApiKeys {
            keys: Arc::new(KeySet {
                open,
                plain,
                store,
                managed: Mutex::default(),
            }),
            brake: Arc::default(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.keys.open
    }

    /// Whether `candidate` is one of the keys. Every key is compared, in constant time, so the
    /// answer's timing says nothing about which key or how much of it matched.
    pub fn verify(&self, candidate: &str) -> bool {
        if self.keys.open {
            return true;
        }
        let mut ok = subtle::Choice::from(0u8);
        for key in &self.keys.plain {
            ok |= key.expose().as_bytes().ct_eq(candidate.as_bytes());
        }
        let hashes = self.managed_hashes();
        if !hashes.is_empty() {
            let hash = sha256_hex(candidate);
            for stored in &hashes {
                ok |= stored.as_bytes().ct_eq(hash.as_bytes());
            }
        }
        ok.into()
    }

    /// The managed keys' hashes, re-read when the file changed since the last look (looked at
    /// most once per [`RECHECK_EVERY`]). A file that cannot be read keeps the last good keys.
    fn managed_hashes(&self) -> Vec<String> {
        let Some(store) = &self.keys.store else {
            return Vec::new();
        };
        let mut managed = self.keys.managed.lock().unwrap_or_else(|e| e.into_inner());
        let due = managed
            .checked
            .is_none_or(|at| at.elapsed() >= RECHECK_EVERY);
        if due {
            managed.checked = Some(Instant::now());
            let modified = store.modified();
            if modified != managed.modified {
                match store.list() {
                    Ok(keys) => {
                        managed.hashes = keys.into_iter().map(|k| k.sha256).collect();
                        managed.modified = modified;
                    }
                    Err(e) => tracing::warn!("API keys not re-read, keeping the last ones: {e}"),
                }
            }
        }
        managed.hashes.clone()
    }

    /// Checks an `Authorization` header value (`Bearer <key>`).
    pub fn verify_header(&self, header: Option<&str>) -> bool {
        if self.keys.open {
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

/// Creates `path` for writing, readable by its owner only; fails if it exists.
pub(super) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
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
    fn the_first_start_makes_a_managed_key_later_starts_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = ApiKeys::resolve(&[], false, dir.path()).unwrap();
        let KeySource::Generated(key) = source else {
            panic!("{source:?}")
        };
        let key = key.expose().to_string();
        assert!(key.starts_with("la-") && key.len() == 51);
        assert!(first.verify(&key) && !first.verify("la-nope"));
        let (again, source) = ApiKeys::resolve(&[], false, dir.path()).unwrap();
        assert!(matches!(
            source,
            KeySource::Configured {
                managed: 1,
                environment: 0,
                legacy: false
            }
        ));
        assert!(again.verify(&key));
    }

    #[test]
    fn keys_added_or_revoked_elsewhere_count_after_the_recheck() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, _) = ApiKeys::resolve(&[], false, dir.path()).unwrap();
        let store = KeyStore::in_dir(dir.path());
        let added = store.add("office").unwrap();
        // Not looked at again within a second of the last look...
        keys.keys.managed.lock().unwrap().checked = Some(Instant::now());
        assert!(!keys.verify(&added));
        // ...then the changed file is read.
        keys.keys.managed.lock().unwrap().checked = None;
        assert!(keys.verify(&added));
        store.revoke("office").unwrap();
        keys.keys.managed.lock().unwrap().checked = None;
        assert!(!keys.verify(&added));
    }

    #[test]
    fn environment_and_legacy_keys_are_honoured_beside_managed_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEGACY_KEY_FILE), "la-legacy\n").unwrap();
        let (keys, source) = ApiKeys::resolve(&[Secret::new("k")], false, dir.path()).unwrap();
        assert!(matches!(
            source,
            KeySource::Configured {
                environment: 1,
                managed: 0,
                legacy: true
            }
        ));
        assert!(keys.verify("k") && keys.verify("la-legacy") && !keys.verify("x"));
        assert!(
            !KeyStore::in_dir(dir.path()).path().exists(),
            "nothing generated"
        );
        let (open, _) = ApiKeys::resolve(&[], true, dir.path()).unwrap();
        assert!(open.is_open() && open.verify("anything"));
    }
}
