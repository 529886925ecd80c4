//! The box's managed API keys: `<data-dir>/api_keys.json`, each key kept only as its SHA-256.
//!
//! A key is shown once, when it is made (`lang-agent keys add`, or the first start); the file
//! holds its name, its hash and when it was made, so a copied data directory or backup gives
//! nobody a working key. The keys are random (192 bits), so an unsalted hash is as hard to
//! reverse as the key is to guess. Writes replace the file atomically (a temporary file renamed
//! over it, mode 0600), which is also how a running server notices a change: it re-reads the
//! file when its modification time moves (`keys.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The managed keys' file in the data directory.
pub const KEY_STORE_FILE: &str = "api_keys.json";

/// Longest key name.
const MAX_NAME_BYTES: usize = 64;

/// One managed key, without the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// What the user calls it (`kitchen-speaker`): unique in the file.
    pub name: String,
    /// SHA-256 of the key, lowercase hex.
    pub sha256: String,
    /// When it was made (RFC 3339, UTC).
    pub created: String,
}

impl StoredKey {
    /// The first 8 hex digits of the hash: enough to tell keys apart in a list.
    pub fn fingerprint(&self) -> &str {
        &self.sha256[..self.sha256.len().min(8)]
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

/// Why the key store could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a key file: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("a key named {0:?} exists already")]
    Exists(String),
    #[error("no key is named {0:?}")]
    NotFound(String),
    #[error(
        "key names are 1 to {MAX_NAME_BYTES} letters, digits, `.`, `_` or `-`; {0:?} is not one"
    )]
    BadName(String),
}

/// The key store of a data directory.
#[derive(Debug, Clone)]
pub struct KeyStore {
    path: PathBuf,
}

impl KeyStore {
    pub fn in_dir(data_dir: &Path) -> KeyStore {
        KeyStore {
            path: data_dir.join(KEY_STORE_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored keys; none when the file does not exist yet.
    pub fn list(&self) -> Result<Vec<StoredKey>, KeyStoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(self.io(source)),
        };
        let file: KeyFile =
            serde_json::from_str(&text).map_err(|source| KeyStoreError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        Ok(file.keys)
    }

    /// Makes a key named `name`, stores its hash and returns the key: the only time it exists
    /// outside the client it is given to.
    pub fn add(&self, name: &str) -> Result<String, KeyStoreError> {
        check_name(name)?;
        let mut keys = self.list()?;
        if keys.iter().any(|k| k.name == name) {
            return Err(KeyStoreError::Exists(name.to_string()));
        }
        let key = generate_key().map_err(|e| self.io(e))?;
        keys.push(StoredKey {
            name: name.to_string(),
            sha256: sha256_hex(&key),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        self.save(keys)?;
        Ok(key)
    }

    /// Removes the key named `name`; clients using it are refused from then on.
    pub fn revoke(&self, name: &str) -> Result<StoredKey, KeyStoreError> {
        let mut keys = self.list()?;
        let at = keys
            .iter()
            .position(|k| k.name == name)
            .ok_or_else(|| KeyStoreError::NotFound(name.to_string()))?;
        let revoked = keys.remove(at);
        self.save(keys)?;
        Ok(revoked)
    }

    /// The file's modification time, to notice a change made by another process.
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }

    fn save(&self, keys: Vec<StoredKey>) -> Result<(), KeyStoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let text = serde_json::to_string_pretty(&KeyFile { keys }).expect("keys serialize");
        let temporary = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&temporary);
        let written = (|| {
            let mut file = crate::auth::keys::create_private(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            give_to_dir_owner(&temporary, dir);
            std::fs::rename(&temporary, &self.path)
        })();
        written.map_err(|e| self.io(e))
    }

    fn io(&self, source: std::io::Error) -> KeyStoreError {
        KeyStoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Makes `file` belong to whoever owns `dir`: `sudo lang-agent keys add` on an installed box
/// must leave a file the service's own user can read. Only root can do it; for anyone else the
/// owner is already right (or cannot be changed), so a failure is ignored.
fn give_to_dir_owner(file: &Path, dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(dir) {
        let _ = std::os::unix::fs::chown(file, Some(meta.uid()), Some(meta.gid()));
    }
}

/// SHA-256 of `key`, lowercase hex.
pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random key: `la-` and 48 hex digits.
pub fn generate_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("la-{hex}"))
}

fn check_name(name: &str) -> Result<(), KeyStoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then_some(())
        .ok_or_else(|| KeyStoreError::BadName(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_as_hashes_and_shown_only_when_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::in_dir(dir.path());
        assert!(store.list().unwrap().is_empty());
        let key = store.add("kitchen").unwrap();
        assert!(key.starts_with("la-") && key.len() == 51);
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&key), "the key itself is never stored");
        assert!(text.contains(&sha256_hex(&key)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        assert!(matches!(
            store.add("kitchen"),
            Err(KeyStoreError::Exists(_))
        ));
        assert!(matches!(
            store.add("bad name"),
            Err(KeyStoreError::BadName(_))
        ));
        store.add("office").unwrap();
        let names: Vec<String> = store.list().unwrap().into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["kitchen", "office"]);
        assert_eq!(store.revoke("kitchen").unwrap().sha256, sha256_hex(&key));
        assert!(matches!(
            store.revoke("kitchen"),
            Err(KeyStoreError::NotFound(_))
        ));
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::in_dir(dir.path());
        std::fs::write(store.path(), "not json").unwrap();
        let error = store.list().unwrap_err().to_string();
        assert!(error.contains(KEY_STORE_FILE), "{error}");
    }
}
