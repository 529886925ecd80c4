//! `lang-agent`: the brain of Xiaozhi voice assistants on a small LAN box.
//!
//! The entry point makes every file it creates private (umask 077: the data directory holds
//! every conversation), loads `.env`, parses the command line, sets up logging and hands over
//! to the subcommand. A subcommand error is printed as one line and exits non-zero.

use std::process::ExitCode;

use clap::Parser;
use lang_agent::cli::{Cli, Command};
use lang_agent::config::Config;

fn main() -> ExitCode {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // A missing .env is normal; a broken one is reported by the settings it fails to give.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let config = match Config::from_global(&cli.global) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    let result: Result<(), String> = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let (config, serve) = config.for_serve(&args).map_err(|e| e.to_string())?;
                lang_agent::server::serve(config, serve).await
            }
            Command::MockLlm(args) => lang_agent::mock_llm::run(args).await,
            Command::Export(args) => lang_agent::store::export::run_command(&config, &args)
                .await
                .map_err(|e| e.to_string()),
            Command::Viewer(args) => lang_agent::viewer::run_standalone(&config, &args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(reason: impl std::fmt::Display) -> ExitCode {
    eprintln!("lang-agent: {reason}");
    ExitCode::FAILURE
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LANG_AGENT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,reqwest=warn"));
    // Logs go to stderr (stdout carries command output such as the one-time key banner), and
    // colours only to a terminal, so journald and log files get plain lines.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
