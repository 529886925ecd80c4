//! The command line's parsing: flags, defaults and the help text.

use super::*;

fn export_args(line: &[&str]) -> Result<ExportArgs, clap::Error> {
    let cli = Cli::try_parse_from([&["lang-agent", "export"], line].concat())?;
    match cli.command {
        Command::Export(args) => Ok(args),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn serve_help_shows_the_defaults_config_applies() {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    let help = cli
        .find_subcommand_mut("serve")
        .expect("serve")
        .render_help()
        .to_string();
    for shown in [
        "[default: route]",
        "[default: qwen-flash on DashScope, else the --llm-name]",
        "[default: append]",
        "[default: tool]",
        "[default: 6]",
        "[default: 20]",
        "[default: <config-dir>/mcp_config.json]",
        "[default: 8590]",
    ] {
        assert!(help.contains(shown), "{shown} missing from:\n{help}");
    }
}

#[test]
fn eval_takes_a_dataset_or_from_log_and_serve_options() {
    let parse = |line: &[&str]| -> Result<EvalArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["lang-agent", "eval"], line].concat())?;
        match cli.command {
            Command::Eval(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    };
    let run = parse(&["set.jsonl", "--out", "r", "--router-llm-name", "fast"]).unwrap();
    assert_eq!(run.dataset, Some(PathBuf::from("set.jsonl")));
    assert_eq!(run.concurrency, 4);
    assert_eq!(run.serve.router_llm_name.as_deref(), Some("fast"));
    let made = parse(&["--from-log", "--since", "2026-11-01", "--out", "d.jsonl"]).unwrap();
    assert!(made.from_log);
    assert_eq!(made.since, chrono::NaiveDate::from_ymd_opt(2026, 11, 1));
    assert!(parse(&["--out", "r"]).is_err(), "no dataset");
    assert!(parse(&["set.jsonl"]).is_err(), "no --out");
    assert!(parse(&["set.jsonl", "--out", "r", "--from-log"]).is_err());
    assert!(parse(&["set.jsonl", "--out", "r", "--since", "2026-11-01"]).is_err());
    assert!(parse(&["--from-log", "--out", "d", "--until", "Nov 1"]).is_err());
    assert!(parse(&["set.jsonl", "--out", "r", "--concurrency", "0"]).is_err());
}

#[test]
fn export_needs_exactly_one_destination_and_conn_str_does_not_block_sql() {
    let args = export_args(&["--to", "postgres://h/db", "--box-id", "b1", "--follow"]).unwrap();
    assert_eq!(args.interval_secs, 2);
    assert_eq!(args.box_id.as_deref(), Some("b1"));
    assert_eq!(
        args.destination(None),
        Ok(ExportDestination::Postgres("postgres://h/db".into()))
    );
    let both = export_args(&["--to", "postgres://h/db", "--sql", "f.sql"]).unwrap();
    assert!(both.destination(None).is_err());
    // The same pair, where --to came from CONN_STR: the file wins.
    assert_eq!(
        both.destination(Some("postgres://h/db")),
        Ok(ExportDestination::SqlFile("f.sql".into()))
    );
    assert!(export_args(&["--sql", "f.sql", "--follow"]).is_err());
}
