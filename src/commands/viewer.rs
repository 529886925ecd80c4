//! `lang-agent viewer`: the conversation viewer alone, over this box's SQLite file, another
//! SQLite file, or a fleet's PostgreSQL (`--db`, else `CONN_STR`, else the data directory's
//! store), with its own login (the same API keys as `serve`) or `--open`.

use std::path::Path;

use crate::auth::ApiKeys;
use crate::cli::ViewerArgs;
use crate::config::{Config, ConfigError, auth_keys_from_env, http_limits, socket_addr};
use crate::http::{self, BindError, bind, run_with_grace, stop_on_signal};
use crate::logging;
use crate::viewer::{self, Access, Source, ViewerError};

/// Why `lang-agent viewer` could not start; one line, printed as `lang-agent: …`.
#[derive(Debug, thiserror::Error)]
pub enum ViewerCommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("viewer: {0}")]
    Source(#[from] ViewerError),
    #[error("viewer: API keys: {0}")]
    Keys(#[from] crate::auth::KeyStoreError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Runs the viewer until a stop signal.
pub async fn run(config: &Config, args: &ViewerArgs) -> Result<(), ViewerCommandError> {
    let limits = http_limits(&args.http)?;
    let source = match args.db.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        Some(url) if crate::pg::is_postgres_url(url) => Source::connect_postgres(url).await,
        Some(path) => Source::open_sqlite_file(Path::new(path)).await,
        None => Source::open_sqlite_file(&config.sqlite_path()).await,
    }?;
    let access = if args.open {
        tracing::warn!(
            "viewer: --open: NO LOGIN. Anyone who can reach port {} reads and can delete every \
             conversation. Use only on a trusted LAN.",
            args.port
        );
        Access::open()
    } else {
        let data_dir = &config.data_dir;
        let (keys, from) = ApiKeys::resolve(&auth_keys_from_env(), false, data_dir)
            .map_err(ViewerCommandError::Keys)?;
        from.announce(data_dir);
        Access::login(keys)
    };
    let addr = socket_addr(&args.host, args.port)?;
    http::raise_open_files_limit(limits.max_connections);
    let (listener, bound) = bind(addr).await?;
    // Printed on stdout so scripts (and tests) started with --port 0 learn the port.
    logging::console_line(format_args!("viewer listening on http://{bound}"));
    let shutdown = stop_on_signal();
    source.keep_search_index(shutdown.clone());
    let app = viewer::router(source, access, None);
    run_with_grace(http::serve(listener, app, limits, &shutdown), &shutdown).await;
    Ok(())
}
