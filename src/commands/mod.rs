//! The subcommands of the binary, the top of the module graph: each file turns its part of
//! the command line (and the one [`Config`]) into a running feature, and says in one error
//! type why it could not. `main.rs` prints that error as `lang-agent: …`.

pub mod backup;
pub mod box_control;
pub mod chat;
pub mod doctor;
pub mod eval;
pub mod export;
pub mod keys;
pub mod live;
pub mod mock_llm;
pub mod pipeline;
pub mod serve;
pub mod stress;
pub mod viewer;

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError};
use crate::export::ExportError;
use crate::mock_llm::MockLlmError;
use crate::store::backup::BackupError;

/// Why a subcommand failed; its message is the one line the user sees.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Viewer(#[from] viewer::ViewerCommandError),
    #[error(transparent)]
    MockLlm(#[from] MockLlmError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Doctor(#[from] doctor::DoctorFailed),
    #[error(transparent)]
    Chat(#[from] chat::ChatError),
    #[error("keys: {0}")]
    Keys(#[from] crate::auth::KeyStoreError),
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
    #[error(transparent)]
    Stress(#[from] crate::stress::StressError),
}

/// The exit status of a configuration error: `EX_CONFIG` from sysexits.h. The shipped unit
/// does not restart on it (`RestartPreventExitStatus=78`): a missing key or a bad flag stays a
/// failed unit whose log says why, instead of a restart loop.
pub const EXIT_CONFIG: u8 = 78;

impl CommandError {
    /// The process's exit status for this error: [`EXIT_CONFIG`] when the configuration is
    /// wrong, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Config(_) => EXIT_CONFIG,
            _ => 1,
        }
    }
}

/// Runs the parsed command line's subcommand to its end.
pub fn run(cli: Cli) -> Result<(), CommandError> {
    let runtime = tokio::runtime::Runtime::new().map_err(CommandError::Runtime)?;
    let config = Config::from_global(&cli.global)?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let config = match args.demo {
                    // The canned model listens first; the box then calls it as its upstream.
                    true => config.with_upstream(&serve::start_demo_upstream().await?),
                    false => config,
                };
                let (config, settings) = config.for_serve(&args)?;
                let again = config.clone();
                let reread: live::Reread =
                    Box::new(move || again.clone().for_serve(&args).map(|(_, serve)| serve));
                Ok(serve::run(config, settings, reread).await?)
            }
            Command::MockLlm(args) => Ok(mock_llm::run(args).await?),
            Command::Export(args) => Ok(export::run(&config, &args).await?),
            Command::Viewer(args) => Ok(viewer::run(&config, &args).await?),
            Command::Backup(args) => Ok(backup::run_backup(&config, &args).await?),
            Command::Restore(args) => Ok(backup::run_restore(&config, &args).await?),
            Command::Doctor(args) => Ok(doctor::run(config, &args).await?),
            Command::Chat(args) => {
                let (config, settings) = config.for_serve(&args.serve)?;
                Ok(chat::run(config, settings, args.thread).await?)
            }
            Command::Keys(command) => Ok(keys::run(&config, &command)?),
            Command::Eval(args) if args.from_log => Ok(eval::make_dataset(&config, &args).await?),
            Command::Eval(args) => {
                let (config, serve) = config.for_serve(&args.serve)?;
                Ok(eval::run(config, serve, &args).await?)
            }
            Command::Stress(args) => Ok(stress::run(&args).await?),
        }
    })
}
