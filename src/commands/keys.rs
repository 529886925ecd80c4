//! `lang-agent keys list|add|revoke|show-path`: the box's managed API keys
//! (`auth::key_store`), from the command line. A running server picks the change up by itself
//! (`auth::keys` re-reads the file), so adding a device's key or revoking a lost one needs no
//! restart. `FAST_AUTH_KEYS` and an older version's `api_key` file are listed, never changed.

use crate::auth::{KeyStore, KeyStoreError};
use crate::cli::KeysCommand;
use crate::config::{Config, auth_keys_from_env};

/// Runs one `keys` subcommand; what it prints is the user's answer.
pub fn run(config: &Config, command: &KeysCommand) -> Result<(), KeyStoreError> {
    let store = KeyStore::in_dir(&config.data_dir);
    match command {
        KeysCommand::ShowPath => println!("{}", store.path().display()),
        KeysCommand::Add { name } => {
            let key = store.add(name)?;
            println!("{key}");
            eprintln!(
                "Made the key {name:?}: it is shown only now. A running server accepts it within a second."
            );
        }
        KeysCommand::Revoke { name } => {
            let revoked = store.revoke(name)?;
            eprintln!(
                "Revoked {:?} ({}): a running server refuses it within a second.",
                revoked.name,
                revoked.fingerprint()
            );
            if store.list()?.is_empty() && auth_keys_from_env().is_empty() {
                eprintln!(
                    "No managed key is left: the server refuses every request until one is added."
                );
            }
        }
        KeysCommand::List => {
            let keys = store.list()?;
            println!("{:<24} {:<10} CREATED", "NAME", "SHA256");
            for key in &keys {
                println!("{:<24} {:<10} {}", key.name, key.fingerprint(), key.created);
            }
            let environment = auth_keys_from_env().len();
            if environment > 0 {
                println!("(and {environment} from FAST_AUTH_KEYS, not managed here)");
            }
            if config.data_dir.join("api_key").exists() {
                println!(
                    "(and the plaintext api_key file of an older version: delete it once its clients have a new key)"
                );
            }
        }
    }
    Ok(())
}
