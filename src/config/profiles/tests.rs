//! Profile files into settings: inheritance from the flags, and the checks that make a bad file
//! one clear line.

use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};
use crate::config::Config;

/// The flags' settings for a box whose config directory is `dir`.
fn box_settings(dir: &Path) -> (Config, ServeConfig) {
    let cli = Cli::try_parse_from([
        "lang-agent",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--llm-name",
        "flag-model",
        "--config-dir",
        dir.to_str().unwrap(),
        "serve",
    ])
    .unwrap();
    let Command::Serve(args) = &cli.command else {
        panic!("not serve")
    };
    Config::from_global(&cli.global)
        .unwrap()
        .for_serve(args)
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join(PROFILES_DIR)).unwrap();
    std::fs::write(dir.join(PROFILES_DIR).join(name), text).unwrap();
}

fn resolved(dir: &Path) -> Result<Vec<ProfileSettings>, String> {
    let (config, serve) = box_settings(dir);
    resolve(dir, &config.llm, &serve).map_err(|e| e.to_string())
}

#[test]
fn without_files_the_box_is_one_default_profile_of_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let all = resolved(dir.path()).unwrap();
    assert_eq!(all.len(), 1);
    let only = &all[0];
    assert_eq!((only.name.as_str(), only.is_default), ("default", true));
    assert_eq!(only.llm.model, "flag-model");
    assert_eq!(only.prompts_dir, dir.path().join("route_sys_prompts"));
    assert_eq!(only.tools, None);
    assert_eq!(only.key_env, "ALI_API_KEY");
}

#[test]
fn a_file_changes_only_what_it_names_and_the_flags_profile_stays_default() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "shop.json",
        r#"{
            // the shop assistant
            "app_ids": ["shop-app"],
            "prompts": "prompts/shop",
            "llm_name": "shop-model",
            "tool_llm_name": "shop-tools",
            "upstream": {"base_url": "http://127.0.0.1:7/v1/", "api_key_env": "LANG_AGENT_TEST_NO_SUCH_VAR"},
            "extra_body": {"chat": {"enable_thinking": false}},
            "tools": ["calculator"],
            "memory_scope": "app",
            "history_max_messages": 6,
            "on_busy": "wait",
            "client_prompt": "ignore"
        }"#,
    );
    let all = resolved(dir.path()).unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|p| (p.name.as_str(), p.is_default))
        .collect();
    assert_eq!(names, [("default", true), ("shop", false)]);
    let shop = &all[1];
    assert_eq!(shop.app_ids, ["shop-app"]);
    assert_eq!(shop.prompts_dir, dir.path().join("prompts/shop"));
    assert_eq!(shop.llm.model, "shop-model");
    assert_eq!(shop.agent.tool_model, "shop-tools");
    assert_eq!(shop.agent.router_model, all[0].agent.router_model);
    assert_eq!(shop.llm.base_url, "http://127.0.0.1:7/v1");
    assert_eq!(shop.key_env, "LANG_AGENT_TEST_NO_SUCH_VAR");
    assert!(shop.llm.api_key.is_none());
    assert_eq!(
        shop.agent.extra_body.chat.get("enable_thinking"),
        Some(&Value::Bool(false))
    );
    assert!(shop.agent.extra_body.router.is_empty());
    assert_eq!(shop.tools.as_deref(), Some(&["calculator".to_string()][..]));
    assert_eq!(shop.memory_scope, MemoryScope::App);
    assert_eq!(shop.history_max_messages, 6);
    assert_eq!(shop.on_busy, BusyPolicy::Wait);
    assert_eq!(shop.client_prompt, ClientPromptMode::Ignore);
}

#[test]
fn a_file_may_take_the_default_role() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "home.json", r#"{"default": true}"#);
    write(dir.path(), "shop.json", r#"{"app_ids": ["s"]}"#);
    let all = resolved(dir.path()).unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|p| (p.name.as_str(), p.is_default))
        .collect();
    assert_eq!(names, [("home", true), ("shop", false)]);
}

#[test]
fn bad_files_are_one_line_naming_the_file_and_what_is_wrong() {
    let cases = [
        ("a.json", "{\"app_ids\": [", "a.json"),
        ("a.json", r#"{"app_id": ["x"]}"#, "unknown field `app_id`"),
        ("a.json", r#"{"graph": "maze"}"#, "maze"),
        (
            "a.json",
            r#"{"history_max_messages": 0}"#,
            "history_max_messages must be at least 1",
        ),
        (
            "a.json",
            r#"{"llm_name": " "}"#,
            "llm_name must not be empty",
        ),
        (
            "a.json",
            r#"{"upstream": {"base_url": "ftp://x"}}"#,
            "must start with http",
        ),
        ("Shop.json", "{}", "profile name \"Shop\""),
    ];
    for (file, text, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), file, text);
        let error = resolved(dir.path()).unwrap_err();
        assert!(error.contains(expected), "{file} {text}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

#[test]
fn an_app_id_selects_one_profile_and_one_profile_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.json", r#"{"app_ids": ["x"]}"#);
    write(dir.path(), "b.json", r#"{"app_ids": ["x"]}"#);
    let error = resolved(dir.path()).unwrap_err();
    assert!(
        error.contains("app id \"x\" selects both profile a and profile b"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.json", r#"{"default": true}"#);
    write(dir.path(), "b.json", r#"{"default": true}"#);
    let error = resolved(dir.path()).unwrap_err();
    assert!(error.contains("a, b all say"), "{error}");
}
