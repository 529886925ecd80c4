//! `serve --demo`'s script: the fake upstream as a friendly stand-in model, so a new user sees
//! the whole box (Xiaozhi API, memory, viewer, tools) with no key and no network.
//!
//! Arithmetic in the question ("what is 37 times 49?") is routed to the tool branch, which calls
//! the calculator with the expression and tells its result; everything else gets a canned
//! answer that says what the box is and remembers what was said before. Requests with `mock`
//! directives are left to the ordinary script.

use super::script::{RouteScript, Script};

/// Words people say for the calculator's operators.
const OPERATOR_WORDS: &[(&str, &str)] = &[
    ("divided by", "/"),
    ("multiplied by", "*"),
    ("times", "*"),
    ("plus", "+"),
    ("minus", "-"),
    ("×", "*"),
    ("÷", "/"),
];

/// Scripts a demo call: a calculator turn when the question holds arithmetic, else a canned
/// answer.
pub fn script(script: &mut Script) {
    script.demo = true;
    match expression(&script.last_user) {
        Some(expression) => {
            script.route = RouteScript::Tool;
            let arguments = serde_json::json!({ "expression": expression }).to_string();
            script.calls = vec![("calculator".to_string(), arguments)];
        }
        None => script.reply_override = Some(canned_answer(script)),
    }
}

/// What the demo says after the calculator answered.
pub fn tool_answer(results: &[String]) -> String {
    format!("The calculator says {}.", results.join(", "))
}

fn canned_answer(script: &Script) -> String {
    let earlier = script.users.len().saturating_sub(1);
    let memory = match earlier {
        0 => "This is the first thing you said in this conversation.".to_string(),
        1 => "You have said one thing before this, and I remember it.".to_string(),
        n => format!("You have said {n} things before this, and I remember them all."),
    };
    format!(
        "Hello from the lang-agent demo! No real model is answering: this is a canned reply, \
         but everything around it is the real box: the conversation is logged, the viewer on \
         port 8590 shows it, and arithmetic such as \"what is 37 times 49\" goes to the \
         calculator tool. {memory}"
    )
}

/// The arithmetic in `text`, as the calculator reads it, if there is any: operator words made
/// symbols, then the longest run of digits, operators and brackets holding an operator
/// between two numbers.
fn expression(text: &str) -> Option<String> {
    let mut spoken = text.to_lowercase();
    for (word, symbol) in OPERATOR_WORDS {
        spoken = spoken.replace(word, symbol);
    }
    spoken
        .split(|c: char| !(c.is_ascii_digit() || "+-*/(). ".contains(c)))
        .map(|run| run.trim().trim_end_matches('.').trim())
        .filter(|run| is_arithmetic(run))
        .max_by_key(|run| run.len())
        .map(str::to_string)
}

fn is_arithmetic(run: &str) -> bool {
    let digits = run.chars().filter(char::is_ascii_digit).count();
    let operator = run
        .char_indices()
        .any(|(i, c)| "+-*/".contains(c) && run[..i].chars().any(|d| d.is_ascii_digit()));
    digits >= 2 && operator && run.ends_with(|c: char| c.is_ascii_digit() || c == ')')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_found_in_words_and_symbols() {
        assert_eq!(
            expression("What is 37 times 49?").as_deref(),
            Some("37 * 49")
        );
        assert_eq!(
            expression("calculate (2+3)*4 please").as_deref(),
            Some("(2+3)*4")
        );
        assert_eq!(expression("12 divided by 4").as_deref(), Some("12 / 4"));
        assert_eq!(expression("hello there"), None);
        assert_eq!(expression("I am 37 years old."), None);
        assert_eq!(expression("call me at 555-"), None);
    }

    #[test]
    fn a_demo_turn_calls_the_calculator_or_answers_kindly() {
        let read = |text: &str| {
            let body = serde_json::json!({"tools": [{"type": "function"}],
                "messages": [{"role": "user", "content": "hi"},
                             {"role": "user", "content": text}]});
            let mut s = Script::read(&body);
            script(&mut s);
            s
        };
        let tool = read("what is 6 times 7");
        assert_eq!(tool.route, RouteScript::Tool);
        assert_eq!(
            tool.calls,
            vec![("calculator".into(), r#"{"expression":"6 * 7"}"#.into())]
        );
        let chat = read("good morning");
        assert!(chat.calls.is_empty());
        assert!(
            chat.reply_override
                .unwrap()
                .contains("said one thing before")
        );
    }
}
