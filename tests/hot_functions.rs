//! The hot-function list that `build.rs` hands the release link (`link/hot-functions.txt`) is
//! what `scripts/hot-functions.sh` writes when its run went right: one symbol a line, each
//! once, and the run served turns. A list recorded from a run whose turns failed would lay out
//! only the start, and the box would keep its turn code scattered (and resident) again.

use std::collections::HashSet;

const LIST: &str = include_str!("../link/hot-functions.txt");

#[test]
fn names_each_function_once_a_line() {
    let mut seen = HashSet::new();
    for (n, name) in LIST.lines().enumerate() {
        let line = n + 1;
        assert!(
            !name.is_empty() && !name.contains(char::is_whitespace),
            "line {line} is not a symbol name: {name:?}"
        );
        assert!(seen.insert(name), "line {line}: {name} is listed twice");
    }
    assert!(seen.len() > 1000, "only {} functions listed", seen.len());
}

#[test]
fn covers_a_served_turn_from_the_call_to_the_stored_answer() {
    // Mangled paths (`10lang_agent5agent5turns` is lang_agent::agent::turns) and SQLite's C
    // functions: each part of a turn that only runs once turns are served.
    let parts = [
        "10lang_agent3api6stream",
        "10lang_agent3api10openai_sse",
        "10lang_agent5agent5turns",
        "10lang_agent5agent6router",
        "10lang_agent3llm6client",
        "10lang_agent5store9turn_rows",
        "5hyper5proto2h1",
        "sqlite3VdbeExec",
        "walIndexAppend",
    ];
    let missing: Vec<_> = parts
        .iter()
        .filter(|part| !LIST.lines().any(|name| name.contains(*part)))
        .collect();
    assert!(
        missing.is_empty(),
        "the list has no function of {missing:?}: record it again with scripts/hot-functions.sh"
    );
}
