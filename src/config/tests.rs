//! The configuration's checks: flags, environment and files into the one `Config`.

use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};

fn serve_config(extra: &[&str]) -> Result<ServeConfig, ConfigError> {
    let line = [
        &["lang-agent", "--base-url", "http://127.0.0.1:9/v1", "serve"],
        extra,
    ]
    .concat();
    let cli = Cli::try_parse_from(line).unwrap();
    let Command::Serve(args) = &cli.command else {
        panic!("not serve")
    };
    Config::from_global(&cli.global)?
        .for_serve(args)
        .map(|(_, serve)| serve)
}

#[test]
fn serve_exports_only_when_asked_and_keeps_the_settings_as_given() {
    assert!(serve_config(&[]).unwrap().export.is_none());
    let export = serve_config(&[
        "--export-to",
        "postgresql://u:pw@127.0.0.1/db",
        "--export-box-id",
        "porch",
        "--export-interval-secs",
        "7",
    ])
    .unwrap()
    .export
    .unwrap();
    assert_eq!(export.interval, Duration::from_secs(7));
    assert_eq!(export.box_id.as_deref(), Some("porch"));
    assert_eq!(export.url.expose(), "postgresql://u:pw@127.0.0.1/db");
    assert!(!format!("{export:?}").contains("pw@"), "{export:?}");
    // Checking the URL and the box id is export's, when serve starts (commands/serve.rs).
}

#[test]
fn answer_size_and_router_deadline_have_defaults_and_floors() {
    let cli = Cli::try_parse_from(["lang-agent", "--base-url", "http://127.0.0.1:9/v1", "serve"])
        .unwrap();
    let Command::Serve(args) = &cli.command else {
        panic!("not serve")
    };
    let (config, serve) = Config::from_global(&cli.global)
        .unwrap()
        .for_serve(args)
        .unwrap();
    assert_eq!(config.llm.max_answer_bytes, 262_144);
    assert_eq!(serve.agent.router_timeout, Duration::from_millis(2500));
    let err = serve_config(&["--max-answer-bytes", "100"]).unwrap_err();
    assert!(err.to_string().contains("--max-answer-bytes"), "{err}");
    let err = serve_config(&["--router-timeout-ms", "0"]).unwrap_err();
    assert!(err.to_string().contains("--router-timeout-ms"), "{err}");
    let set = serve_config(&["--router-timeout-ms", "800"]).unwrap();
    assert_eq!(set.agent.router_timeout, Duration::from_millis(800));
}

#[test]
fn a_bad_base_url_is_shown_without_its_secrets() {
    let err = Config::from_global(&GlobalArgs {
        data_dir: "d".into(),
        config_dir: "c".into(),
        base_url: Some("ftp://h/v1?key=hunter2".into()),
        llm_name: "m".into(),
        thinking: Default::default(),
        log_format: Default::default(),
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ftp://h/v1?key=***") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn http_limits_default_and_refuse_zero() {
    let http = serve_config(&[]).unwrap().http;
    assert_eq!(http, HttpLimits::default());
    assert_eq!(http.header_timeout, Duration::from_secs(10));
    assert_eq!(http.body_timeout, Duration::from_secs(30));
    assert_eq!(http.idle_timeout, Duration::from_secs(60));
    assert_eq!(http.max_connections, 2048);
    let set = serve_config(&["--http-idle-timeout-secs", "5", "--max-connections", "7"])
        .unwrap()
        .http;
    assert_eq!(
        (set.idle_timeout, set.max_connections),
        (Duration::from_secs(5), 7)
    );
    for flag in [
        "--http-header-timeout-secs",
        "--http-body-timeout-secs",
        "--http-idle-timeout-secs",
        "--max-connections",
    ] {
        let err = serve_config(&[flag, "0"]).unwrap_err().to_string();
        assert!(err.starts_with(flag), "{err}");
    }
}

fn agent_config(config_dir: &std::path::Path, extra: &[&str]) -> Result<AgentConfig, ConfigError> {
    let dir = config_dir.to_str().unwrap();
    serve_config(&[&["--config-dir", dir], extra].concat()).map(|s| s.agent)
}

#[test]
fn helper_models_default_to_dashscope_names_only_on_dashscope() {
    let on = |base_url: &str, llm_name: &str| {
        let line = [
            "lang-agent",
            "--base-url",
            base_url,
            "--llm-name",
            llm_name,
            "serve",
        ];
        let cli = Cli::try_parse_from(line).unwrap();
        let Command::Serve(args) = &cli.command else {
            panic!("not serve")
        };
        let (_, serve) = Config::from_global(&cli.global)
            .unwrap()
            .for_serve(args)
            .unwrap();
        (serve.agent.router_model, serve.agent.tool_model)
    };
    let dashscope = on(
        "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        "qwen-max",
    );
    assert_eq!(dashscope, ("qwen-flash".into(), "qwen-max".into()));
    for local in [
        "http://127.0.0.1:11434/v1",
        "http://localhost:8000/v1",
        "http://aliyuncs.com.example.lan/v1",
    ] {
        let models = on(local, "qwen2.5:7b");
        assert_eq!(
            models,
            ("qwen2.5:7b".into(), "qwen2.5:7b".into()),
            "{local}"
        );
    }
}

#[test]
fn agent_settings_come_from_flags_then_agent_json_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = agent_config(dir.path(), &[]).unwrap();
    assert_eq!(defaults.graph, GraphKind::Route);
    // A local upstream (127.0.0.1) has no qwen-flash: every model is the --llm-name.
    assert_eq!(defaults.router_model, "qwen-plus");
    assert_eq!(defaults.tool_model, "qwen-plus", "the --llm-name");
    assert_eq!(defaults.tool_node, ToolNode::Tool);
    assert_eq!(defaults.max_tool_steps, 6);
    assert_eq!(defaults.tool_timeout, Duration::from_secs(20));
    assert_eq!(defaults.mcp_config, dir.path().join("mcp_config.json"));

    std::fs::write(
        dir.path().join("agent.json"),
        r#"{
            // the box in the kitchen
            "graph": "react", "tool_node": "chatty", "router_llm_name": "fast",
            "tool_llm_name": "big", "max_tool_steps": 3, "tool_timeout_secs": 7,
            "mcp_config": "servers.json",
        }"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("servers.json"),
        r#"{"mcpServers": {"calc": {"url": "http://127.0.0.1:1/mcp"}}}"#,
    )
    .unwrap();
    let from_file = agent_config(dir.path(), &[]).unwrap();
    assert_eq!(
        (
            from_file.graph,
            from_file.tool_node,
            from_file.router_model.as_str()
        ),
        (GraphKind::React, ToolNode::Chatty, "fast")
    );
    assert_eq!(
        (from_file.tool_model.as_str(), from_file.max_tool_steps),
        ("big", 3)
    );
    assert_eq!(from_file.tool_timeout, Duration::from_secs(7));
    assert_eq!(from_file.mcp_config, dir.path().join("servers.json"));

    let flags = agent_config(
        dir.path(),
        &[
            "--graph",
            "route",
            "--max-tool-steps",
            "9",
            "--router-llm-name",
            "flag",
        ],
    )
    .unwrap();
    assert_eq!(
        (
            flags.graph,
            flags.max_tool_steps,
            flags.router_model.as_str()
        ),
        (GraphKind::Route, 9, "flag")
    );
    assert_eq!(
        flags.tool_node,
        ToolNode::Chatty,
        "unflagged settings keep the file's"
    );

    let err = agent_config(dir.path(), &["--tool-timeout-secs", "0"]).unwrap_err();
    assert!(err.to_string().contains("--tool-timeout-secs"), "{err}");
    let err = agent_config(dir.path(), &["--tool-llm-name", " "]).unwrap_err();
    assert!(err.to_string().contains("--tool-llm-name"), "{err}");
}

#[test]
fn turn_limits_default_and_must_be_positive() {
    assert_eq!(
        serve_config(&[]).unwrap().turn_limits,
        TurnLimits::default()
    );
    let limits = serve_config(&["--turn-timeout-secs", "9", "--client-stall-secs", "4"])
        .unwrap()
        .turn_limits;
    assert_eq!(
        (limits.turn_timeout, limits.client_stall),
        (Duration::from_secs(9), Duration::from_secs(4))
    );
    for flag in ["--turn-timeout-secs", "--client-stall-secs"] {
        let err = serve_config(&[flag, "0"]).unwrap_err().to_string();
        assert!(err.contains(flag), "{err}");
    }
}

#[test]
fn thinking_is_off_on_dashscope_by_default_and_left_alone_elsewhere() {
    use crate::llm::Thinking;
    let extra = |base_url: &str, thinking: Thinking| {
        let global = GlobalArgs {
            data_dir: "d".into(),
            config_dir: "c".into(),
            base_url: Some(base_url.into()),
            llm_name: "m".into(),
            thinking,
            log_format: Default::default(),
        };
        serde_json::Value::Object(Config::from_global(&global).unwrap().llm.extra_body())
    };
    let dashscope = "https://dashscope.aliyuncs.com/compatible-mode/v1";
    let local = "http://127.0.0.1:11434/v1";
    let off = serde_json::json!({"enable_thinking": false});
    assert_eq!(extra(dashscope, Thinking::Auto), off);
    assert_eq!(extra(local, Thinking::Auto), serde_json::json!({}));
    assert_eq!(extra(local, Thinking::Off), off);
    assert_eq!(
        extra(dashscope, Thinking::On),
        serde_json::json!({"enable_thinking": true})
    );
}
