//! `lang-agent`: the brain of Xiaozhi voice assistants on a small LAN box.
//!
//! The entry point makes every file it creates private (umask 077: the data directory holds
//! every conversation), loads `.env`, parses the command line, sets up logging (`logging.rs`)
//! and hands over to the subcommand. A subcommand error is printed as one line and exits
//! non-zero (78, `EX_CONFIG`, when the configuration is wrong).

use std::process::ExitCode;

use clap::Parser;

use lang_agent::cli::{Cli, Command};
use lang_agent::{commands, logging};

fn main() -> ExitCode {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // A missing .env is normal; a broken one is reported by the settings it fails to give.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Chat(_) | Command::Keys(_) | Command::Eval(_)
    );
    let log = logging::init(cli.global.log_format, quiet);
    let result = commands::run(cli);
    // Write out the buffered log lines first, so that the reason comes last.
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::error_line(format_args!("lang-agent: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
