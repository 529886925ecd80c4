//! What the mock says: the deterministic reply and the directives that script it.
//!
//! Directives are written inside the last user message, so each test scripts its own turn
//! and tests can run in parallel against one mock. The mock tells three kinds of call apart:
//!
//! **Router calls** (the request asks for `response_format: {"type": "json_object"}`) answer
//! `{"step":"chat"}` unless told otherwise; failure directives below do not apply to them.
//! - `[[mock:route=tool]]` → `{"step":"tool"}`; `[[mock:route=garbage]]` → text that is not
//!   JSON; `[[mock:route=fail]]` → HTTP 500;
//! - `[[mock:route_delay=MS]]` the router call (only) waits MS milliseconds.
//!
//! **Chatty calls** (the system prompt is the built-in `chatty_prompt.txt`) answer the
//! [`FILLER`] sentences, or `[[mock:filler=TEXT]]`; failure directives do not apply either.
//!
//! **Judge calls** (the system prompt's first line is that of the built-in
//! `configs/eval/judge_prompt.txt`, `lang-agent eval`'s judge) answer
//! `{"verdict":"correct","reason":"mock judge"}`, or `"incorrect"` when the judged question
//! holds `[[mock:judge=incorrect]]`; failure directives do not apply to them.
//!
//! **Answer calls** (everything else):
//! - `[[mock:reply=TEXT]]` answer exactly TEXT;
//! - `[[mock:status=CODE]]` answer with that HTTP status and an OpenAI error body;
//! - `[[mock:cut]]` stream the first half of the reply, then drop the connection;
//! - `[[mock:fail_first=N]]` the first N requests with this exact last user message get 500;
//! - `[[mock:call=TOOL {"json": "args"}]]` when the request offers tools and no tool result
//!   follows the last user message, call TOOL with those arguments (several directives: several
//!   calls in one answer, which the agent runs in parallel); once tool results follow the last
//!   user message, answer `Tool said: R1 | R2.` with the results verbatim;
//! - `[[mock:repeat_calls]]` make the calls again in every round while tools are offered (a
//!   model that never stops calling tools).
//!
//! Size (answer calls):
//! - `[[mock:size=BYTES]]` pad the reply with `blah ` to BYTES bytes and stream it in pieces
//!   of up to [`BIG_PIECE`] bytes instead of 8 characters (a big answer in a sane number of
//!   frames), for tests of clients that stop reading;
//! - `[[mock:hang_after=N]]` stream N pieces, then go silent with the connection open (a
//!   stalled upstream), for tests of the turn deadline.
//!
//! For every kind, `[[mock:delay=MS]]` waits MS milliseconds before answering (as
//! `--delay-ms` does for every call).
//!
//! **Upstream faults** (for the fault suite; see [`super::faults`]). On answer calls:
//! - `[[mock:endless]]` stream text forever, as fast as the client reads;
//! - `[[mock:drip=MS]]` stream one small piece of text every MS milliseconds, forever (the
//!   first at once);
//! - `[[mock:garbage]]` a 200 `text/event-stream` whose `data:` lines are not JSON;
//! - `[[mock:tool_index=N]]` a streamed tool-call delta with index N (tools offered or not);
//! - `[[mock:chat_tool_calls]]` make the `call` directives' calls even when the request offers
//!   no tools (a chat model that calls tools anyway).
//!
//! On non-streaming calls of any kind (the router's): `[[mock:huge_body]]` a 200 JSON body that
//! never ends; with `[[mock:status=CODE]]` on an answer call, the error body never ends.
//! Endless and dripping bodies stop when the client goes away.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    Answer,
    Status(u16),
    Cut,
    FailFirst(u32),
}

/// What the chatty model says unless `[[mock:filler=TEXT]]` says otherwise: three sentences,
/// so that tests can see filler stop at a sentence end.
pub const FILLER: &str = "Let me look into that for you. One moment please. Still working on it, \
                          almost there. Thanks for waiting so patiently.";

/// Which model role a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallKind {
    Router,
    Chatty,
    Judge,
    Answer,
}

/// The judge prompt `lang-agent eval` ships (and builds in), whose first line marks a judge
/// call. Included from the file both use, so the two cannot drift apart.
const JUDGE_PROMPT: &str = include_str!("../../configs/eval/judge_prompt.txt");

/// The first line of `text`, trimmed.
fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or("").trim()
}

/// The router's scripted decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteScript {
    Chat,
    Tool,
    Garbage,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Script {
    pub kind: CallKind,
    pub last_user: String,
    pub users: Vec<String>,
    pub reply_override: Option<String>,
    pub behaviour: Behaviour,
    pub delay: Option<Duration>,
    /// Characters in all messages, for a plausible token count.
    pub prompt_chars: usize,
    pub route: RouteScript,
    pub route_delay: Option<Duration>,
    pub filler: Option<String>,
    /// `[[mock:judge=incorrect]]`: a judge call finds the answer incorrect.
    pub judge_incorrect: bool,
    /// `(tool name, JSON arguments)` of each `call` directive.
    pub calls: Vec<(String, String)>,
    pub repeat_calls: bool,
    pub tools_offered: bool,
    /// Contents of the tool results after the last user message, in order.
    pub tool_results: Vec<String>,
    /// A scripted upstream fault (`endless`, `drip`, `garbage`, `tool_index`, `huge_body`).
    pub fault: Option<Fault>,
    /// `[[mock:chat_tool_calls]]`: call tools even when none are offered.
    pub chat_tool_calls: bool,
    /// `size`: the reply is padded to this many bytes.
    pub size: Option<usize>,
    /// `hang_after`: pieces streamed before the mock goes silent.
    pub hang_after: Option<usize>,
    /// `--tokens`: an answer without a `reply` directive is this many pieces long.
    pub tokens: Option<usize>,
    /// `serve --demo`: tool results are told in a sentence, not echoed.
    pub demo: bool,
}

/// A scripted upstream fault, see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Endless,
    Drip(Duration),
    Garbage,
    ToolIndex(u64),
    HugeBody,
}

/// The piece length of a `size`-padded reply.
pub const BIG_PIECE: usize = 4096;

/// What an answer call produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Text(String),
    /// `(tool name, JSON arguments)` per call.
    ToolCalls(Vec<(String, String)>),
}

/// What the command line scripts for calls whose text has no directive for it (`mock-llm`'s
/// `--route`, `--tool-call`, `--tokens`; `serve --demo`'s canned answers).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// The router's answer when no `route` directive says otherwise (default chat).
    pub route_tool: bool,
    /// `(tool, JSON arguments)` called when tools are offered and no `call` directive is given.
    pub tool_call: Option<(String, String)>,
    /// Answers (without a `reply` directive) are this many 8-character pieces long.
    pub tokens: Option<usize>,
    /// `serve --demo`: friendly canned answers, arithmetic routed to the calculator.
    pub demo: bool,
}

impl Script {
    #[cfg(test)]
    pub fn read(body: &Value) -> Script {
        Script::read_with(body, &Defaults::default())
    }

    /// The script of a request, with the command line's `defaults` where its text says nothing.
    pub fn read_with(body: &Value, defaults: &Defaults) -> Script {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut users = Vec::new();
        let mut prompt_chars = 0;
        let mut tool_results = Vec::new();
        for m in &messages {
            let text = content_text(m.get("content"));
            prompt_chars += text.chars().count();
            match m.get("role").and_then(Value::as_str) {
                Some("user") => {
                    users.push(text);
                    tool_results.clear();
                }
                Some("tool") => tool_results.push(text),
                _ => {}
            }
        }
        let first_system = messages
            .first()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("system"))
            .map(|m| content_text(m.get("content")));
        let kind = if first_system
            .as_deref()
            .is_some_and(|system| first_line(system) == first_line(JUDGE_PROMPT))
        {
            CallKind::Judge
        } else if body
            .pointer("/response_format/type")
            .and_then(Value::as_str)
            == Some("json_object")
        {
            CallKind::Router
        } else if first_system.as_deref().map(str::trim)
            == Some(crate::agent::prompts::PromptName::Chatty.default_text())
        {
            CallKind::Chatty
        } else {
            CallKind::Answer
        };
        let last_user = users.last().cloned().unwrap_or_default();
        let mut script = Script {
            kind,
            last_user: last_user.clone(),
            users,
            reply_override: None,
            behaviour: Behaviour::Answer,
            delay: None,
            prompt_chars,
            route: RouteScript::Chat,
            route_delay: None,
            filler: None,
            judge_incorrect: false,
            calls: Vec::new(),
            repeat_calls: false,
            tools_offered: body
                .get("tools")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty()),
            tool_results,
            fault: None,
            chat_tool_calls: false,
            size: None,
            hang_after: None,
            tokens: defaults.tokens,
            demo: false,
        };
        if defaults.route_tool {
            script.route = RouteScript::Tool;
        }
        for (name, value) in directives(&last_user) {
            match name {
                "route" => {
                    script.route = match value {
                        "tool" => RouteScript::Tool,
                        "garbage" => RouteScript::Garbage,
                        "fail" => RouteScript::Fail,
                        _ => RouteScript::Chat,
                    }
                }
                "route_delay" => script.route_delay = value.parse().ok().map(Duration::from_millis),
                "filler" => script.filler = Some(value.to_string()),
                "judge" => script.judge_incorrect = value == "incorrect",
                "call" => {
                    let (tool, arguments) = value.split_once(' ').unwrap_or((value, "{}"));
                    script
                        .calls
                        .push((tool.to_string(), arguments.trim().to_string()));
                }
                "repeat_calls" => script.repeat_calls = true,
                "reply" => script.reply_override = Some(value.to_string()),
                "status" => script.behaviour = Behaviour::Status(value.parse().unwrap_or(500)),
                "cut" => script.behaviour = Behaviour::Cut,
                "fail_first" => script.behaviour = Behaviour::FailFirst(value.parse().unwrap_or(1)),
                "delay" => script.delay = value.parse().ok().map(Duration::from_millis),
                "size" => script.size = value.parse().ok(),
                "hang_after" => script.hang_after = value.parse().ok(),
                _ => {}
            }
        }
        // Upstream faults, kept apart from the directives above.
        for (name, value) in directives(&last_user) {
            match name {
                "endless" => script.fault = Some(Fault::Endless),
                "drip" => {
                    let every = Duration::from_millis(value.parse().unwrap_or(1000));
                    script.fault = Some(Fault::Drip(every));
                }
                "garbage" => script.fault = Some(Fault::Garbage),
                "tool_index" => script.fault = value.parse().ok().map(Fault::ToolIndex),
                "huge_body" => script.fault = Some(Fault::HugeBody),
                "chat_tool_calls" => script.chat_tool_calls = true,
                _ => {}
            }
        }
        if script.calls.is_empty()
            && let Some(call) = &defaults.tool_call
        {
            script.calls.push(call.clone());
        }
        if defaults.demo && directives(&script.last_user).is_empty() {
            super::demo::script(&mut script);
        }
        script
    }

    /// What a router call answers, or the HTTP status it fails with.
    pub fn route_reply(&self) -> Result<String, u16> {
        match self.route {
            RouteScript::Chat => Ok(r#"{"step":"chat"}"#.into()),
            RouteScript::Tool => Ok(r#"{"step":"tool"}"#.into()),
            RouteScript::Garbage => Ok("I would say... tools? Or chat. Hard to tell!".into()),
            RouteScript::Fail => Err(500),
        }
    }

    /// What a judge call answers.
    pub fn judge_reply(&self) -> String {
        let verdict = if self.judge_incorrect {
            "incorrect"
        } else {
            "correct"
        };
        format!(r#"{{"verdict":"{verdict}","reason":"mock judge"}}"#)
    }

    /// What a chatty call answers.
    pub fn filler_reply(&self) -> String {
        self.filler.clone().unwrap_or_else(|| FILLER.to_string())
    }

    /// What an answer call produces: tool calls when scripted and possible, else text.
    pub fn answer(&self) -> Answer {
        let call_now = (self.tools_offered || self.chat_tool_calls)
            && !self.calls.is_empty()
            && (self.tool_results.is_empty() || self.repeat_calls);
        if call_now {
            Answer::ToolCalls(self.calls.clone())
        } else if !self.tool_results.is_empty() && self.demo {
            Answer::Text(super::demo::tool_answer(&self.tool_results))
        } else if !self.tool_results.is_empty() && self.reply_override.is_none() {
            Answer::Text(format!("Tool said: {}.", self.tool_results.join(" | ")))
        } else {
            Answer::Text(self.reply())
        }
    }

    pub fn reply(&self) -> String {
        let reply = match &self.reply_override {
            Some(text) => text.clone(),
            None => {
                let said = format!(
                    "You said: {}. I remember: {}.",
                    self.last_user,
                    self.users.join(" | ")
                );
                match self.tokens {
                    Some(tokens) => sized_chars(said, tokens * PIECE_CHARS),
                    None => said,
                }
            }
        };
        self.padded(reply)
    }

    /// `reply` padded to the `size` directive's byte count (ASCII padding, so the count is
    /// exact whenever the reply itself is shorter).
    fn padded(&self, mut reply: String) -> String {
        if let Some(room) = self.size.and_then(|size| size.checked_sub(reply.len())) {
            reply.push_str(&"blah ".repeat(room.div_ceil(5))[..room]);
        }
        reply
    }

    /// How many characters each streamed piece of the reply holds.
    pub fn piece_chars(&self) -> usize {
        if self.size.is_some() {
            BIG_PIECE
        } else {
            PIECE_CHARS
        }
    }
}

/// Characters in one streamed piece of an ordinary reply (a "token").
const PIECE_CHARS: usize = 8;

/// `text` cut or padded with `blah ` to exactly `chars` characters.
fn sized_chars(text: String, chars: usize) -> String {
    let padding = std::iter::repeat("blah ").flat_map(str::chars);
    text.chars().chain(padding).take(chars).collect()
}

/// `[[mock:name=value]]` and `[[mock:name]]` directives, in order.
fn directives(text: &str) -> Vec<(&str, &str)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("[[mock:") {
        let after = &rest[start + 7..];
        let Some(end) = after.find("]]") else { break };
        let body = &after[..end];
        found.push(body.split_once('=').unwrap_or((body, "")));
        rest = &after[end + 2..];
    }
    found
}

fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// `text` in pieces of at most `n` characters.
pub fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn echoes_and_remembers_user_turns() {
        let s = Script::read(&json!({"messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": "b"},
        ]}));
        assert_eq!(s.reply(), "You said: b. I remember: a | b.");
    }

    #[test]
    fn tells_router_chatty_and_answer_calls_apart() {
        let user =
            json!({"role": "user", "content": "hi [[mock:route=tool]] [[mock:route_delay=5]]"});
        let router = Script::read(&json!({"response_format": {"type": "json_object"},
            "messages": [{"role": "system", "content": "route!"}, user.clone()]}));
        assert_eq!(router.kind, CallKind::Router);
        assert_eq!(router.route_reply(), Ok(r#"{"step":"tool"}"#.to_string()));
        assert_eq!(router.route_delay, Some(Duration::from_millis(5)));
        let chatty_prompt = crate::agent::prompts::PromptName::Chatty.default_text();
        let chatty = Script::read(&json!({"messages": [
            {"role": "system", "content": format!("{chatty_prompt}\n")}, user.clone()]}));
        assert_eq!(chatty.kind, CallKind::Chatty);
        assert_eq!(chatty.filler_reply(), FILLER);
        let answer = Script::read(&json!({"messages": [{"role": "system", "content": "x"}, user]}));
        assert_eq!(answer.kind, CallKind::Answer);
    }

    #[test]
    fn judge_calls_answer_a_verdict() {
        let judge = |question: &str| {
            Script::read(&json!({"messages": [
                {"role": "system", "content": format!("{JUDGE_PROMPT}\n")},
                {"role": "user", "content": format!("Question:\n{question}\n\nExpected answer:\n42")}]}))
        };
        let correct = judge("6*7? [[mock:status=500]]");
        assert_eq!(correct.kind, CallKind::Judge);
        assert_eq!(
            correct.judge_reply(),
            r#"{"verdict":"correct","reason":"mock judge"}"#
        );
        let incorrect = judge("6*7? [[mock:judge=incorrect]]");
        assert!(incorrect.judge_reply().contains(r#""verdict":"incorrect""#));
        // Another prompt that merely mentions verdicts is an answer call.
        let other = Script::read(&json!({"messages": [
            {"role": "system", "content": "Reply with a verdict."},
            {"role": "user", "content": "hi"}]}));
        assert_eq!(other.kind, CallKind::Answer);
    }

    #[test]
    fn calls_tools_until_results_arrive() {
        let user = json!({"role": "user",
            "content": r#"go [[mock:call=add {"a": 1, "b": 2}]] [[mock:call=clock]]"#});
        let tools = json!([{"type": "function", "function": {"name": "add"}}]);
        let first = Script::read(&json!({"tools": tools, "messages": [user.clone()]}));
        assert_eq!(
            first.answer(),
            Answer::ToolCalls(vec![
                ("add".into(), r#"{"a": 1, "b": 2}"#.into()),
                ("clock".into(), "{}".into())
            ])
        );
        let without_tools = Script::read(&json!({"messages": [user.clone()]}));
        assert!(matches!(without_tools.answer(), Answer::Text(t) if t.starts_with("You said:")));
        let after = Script::read(&json!({"tools": tools, "messages": [user,
            {"role": "assistant", "content": "", "tool_calls": []},
            {"role": "tool", "content": "3", "tool_call_id": "a"},
            {"role": "tool", "content": "noon", "tool_call_id": "b"}]}));
        assert_eq!(after.answer(), Answer::Text("Tool said: 3 | noon.".into()));
    }

    #[test]
    fn reads_directives() {
        let s = Script::read(&json!({"messages": [
            {"role": "user", "content": "hi [[mock:delay=20]] [[mock:reply=Hello, 世界！]] [[mock:cut]]"}]}));
        assert_eq!(s.reply(), "Hello, 世界！");
        assert_eq!(s.behaviour, Behaviour::Cut);
        assert_eq!(s.delay, Some(Duration::from_millis(20)));
        assert_eq!(pieces("abcdefghij", 8), vec!["abcdefgh", "ij"]);
    }

    #[test]
    fn reads_fault_directives() {
        let read =
            |text: &str| Script::read(&json!({"messages": [{"role": "user", "content": text}]}));
        assert_eq!(read("x [[mock:endless]]").fault, Some(Fault::Endless));
        assert_eq!(
            read("x [[mock:drip=250]]").fault,
            Some(Fault::Drip(Duration::from_millis(250)))
        );
        assert_eq!(read("x [[mock:garbage]]").fault, Some(Fault::Garbage));
        assert_eq!(
            read("x [[mock:tool_index=100000000000]]").fault,
            Some(Fault::ToolIndex(100_000_000_000))
        );
        assert_eq!(read("x [[mock:huge_body]]").fault, Some(Fault::HugeBody));
        let chat = read(r#"x [[mock:chat_tool_calls]] [[mock:call=clock]]"#);
        assert_eq!(
            chat.answer(),
            Answer::ToolCalls(vec![("clock".into(), "{}".into())])
        );
        assert_eq!(read("x").fault, None);
    }

    #[test]
    fn pads_a_reply_to_the_size_asked() {
        let s = Script::read(&json!({"messages": [
            {"role": "user", "content": "big [[mock:size=10000]] [[mock:reply=Hi]]"}]}));
        let reply = s.reply();
        assert_eq!(reply.len(), 10_000);
        assert!(reply.starts_with("Hiblah blah"));
        assert_eq!(s.piece_chars(), BIG_PIECE);
    }
}
