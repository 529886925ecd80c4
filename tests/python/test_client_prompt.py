"""The client's own system prompt on session calls (`--client-prompt`), and local upstreams.

Xiaozhi's first system message carries the persona the user set, the current time and a
`<memory>` block. On a session call the box takes only the newest user turn from the dialogue;
these tests read what the fake upstream received to show where that system text goes: after
the box's chat prompt (append, the default), alone (replace) or nowhere (ignore), and never to
the router, and that it is not stored.
"""

from __future__ import annotations

import sqlite3
from http import HTTPStatus
from pathlib import Path

import pytest

from lahelpers import API_KEY, collect, describe, uniq, xiaozhi_call, xiaozhi_dialogue

PERSONA = "你是小明，一个住在杭州的温柔助手。当前时间：2026-12-02 10:42。<memory>用户喜欢猫</memory>"


def calls_for(mock, marker: str) -> tuple[list[dict], list[dict]]:
    """(router calls, answer calls) the mock received whose last user text holds `marker`."""
    routers, answers = [], []
    for body in mock.requests():
        messages = body.get("messages") or []
        users = [m for m in messages if m.get("role") == "user"]
        if not users or marker not in str(users[-1].get("content")):
            continue
        is_router = (body.get("response_format") or {}).get("type") == "json_object"
        (routers if is_router else answers).append(body)
    return routers, answers


def system_of(body: dict) -> str:
    first = body["messages"][0]
    assert first["role"] == "system", body["messages"][:2]
    return first["content"]


def speak(server, sid: str, marker: str, *, system: str = PERSONA):
    dialogue = xiaozhi_dialogue([("你好", "你好呀")], f"今天天气怎么样 {marker}", system=system)
    events = collect(xiaozhi_call(server, sid, dialogue))
    assert events and all(e.status_code == HTTPStatus.OK for e in events), describe(events)
    return events


def test_append_puts_the_persona_after_the_box_prompt_and_keeps_it_from_the_router(
        server, mock_llm, sid):
    marker = uniq("persona")
    speak(server, sid, marker)
    routers, answers = calls_for(mock_llm, marker)
    assert routers and answers, f"router calls {len(routers)}, answer calls {len(answers)}"
    answer_system = system_of(answers[-1])
    # The box's chat prompt first, then the client's text, whole, in a delimited block.
    assert answer_system.index("voice assistant") < answer_system.index(PERSONA), answer_system
    assert "<client_instructions>\n" + PERSONA + "\n</client_instructions>" in answer_system
    for router in routers:
        assert PERSONA not in system_of(router), "the router keeps its own prompt"
        assert "小明" not in str(router["messages"])


def test_the_persona_is_fresh_every_turn_and_never_stored(server, mock_llm, sid):
    first, second = uniq("t1"), uniq("t2")
    speak(server, sid, first, system="You are Xiaoming. Now: 10:41")
    speak(server, sid, second, system="You are Xiaoming. Now: 10:42")
    _, answers = calls_for(mock_llm, second)
    sent = answers[-1]["messages"]
    systems = [m["content"] for m in sent if m["role"] == "system"]
    assert len(systems) == 1, sent
    assert "Now: 10:42" in systems[0] and "Now: 10:41" not in str(sent), sent
    db = Path(server.data_dir) / "lang-agent.sqlite3"
    assert db.exists(), list(Path(server.data_dir).iterdir())
    with sqlite3.connect(db) as conn:
        stored = [r[0] for r in conn.execute(
            "SELECT content FROM messages WHERE conversation_id = ?", (sid,))]
    assert len(stored) == 4, stored
    assert not any("Xiaoming" in text for text in stored), stored


@pytest.mark.parametrize("mode", ["replace", "ignore"])
def test_replace_and_ignore(make_server, mock_llm, sid, mode):
    server = make_server(mock_llm.base_url, ["--client-prompt", mode])
    marker = uniq(mode)
    speak(server, sid, marker)
    _, answers = calls_for(mock_llm, marker)
    answer_system = system_of(answers[-1])
    if mode == "replace":
        assert answer_system == PERSONA
    else:
        assert PERSONA not in answer_system and "voice assistant" in answer_system


def test_openai_thread_calls_follow_the_same_rule_and_stateless_calls_keep_theirs(
        server, mock_llm, sid):
    from openai import OpenAI

    client = OpenAI(base_url=server.openai_base, api_key=API_KEY, max_retries=0)
    remembered = uniq("thread")
    client.chat.completions.create(
        model="m", extra_body={"thread_id": sid},
        messages=[{"role": "system", "content": PERSONA},
                  {"role": "user", "content": f"hi {remembered}"}])
    _, answers = calls_for(mock_llm, remembered)
    assert "<client_instructions>\n" + PERSONA in system_of(answers[-1])

    stateless = uniq("stateless")
    client.chat.completions.create(
        model="m", messages=[{"role": "system", "content": "Classify the intent."},
                             {"role": "user", "content": f"hi {stateless}"}])
    _, answers = calls_for(mock_llm, stateless)
    assert system_of(answers[-1]) == "Classify the intent."


def test_a_local_upstream_gets_every_call_under_the_llm_name(make_server, mock_llm, sid):
    """Ollama-style: the upstream (127.0.0.1) is not DashScope, so the router and the tool
    model default to --llm-name instead of qwen-flash, which such a server answers with 404."""
    server = make_server(mock_llm.base_url, ["--llm-name", "qwen2.5:7b"])
    marker = uniq("local")
    speak(server, sid, marker)
    routers, answers = calls_for(mock_llm, marker)
    assert routers and answers
    assert {call["model"] for call in routers + answers} == {"qwen2.5:7b"}
    assert "router=qwen2.5:7b" in server.proc.log_tail()
