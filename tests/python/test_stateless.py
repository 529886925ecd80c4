"""Stateless clients (no session_id / thread_id) through the real SDKs: a resent dialogue
continues its conversation in the log instead of copying it, and helper one-shots are marked
stateless and hidden from the viewer's list by default."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from contextlib import closing
from http import HTTPStatus
from pathlib import Path

import pytest

from lahelpers import API_KEY, describe, ds_call, expected_reply, free_port, uniq, xiaozhi_call, \
    xiaozhi_spoken

openai = pytest.importorskip("openai")

TURNS = 10


@pytest.fixture(scope="module")
def box(mock_llm, make_server):
    """A server of its own (its log holds only this module's conversations), viewer open."""
    viewer_port = free_port()
    server = make_server(mock_llm.base_url,
                         ["--viewer-port", str(viewer_port), "--viewer-open"])
    server.viewer = f"http://127.0.0.1:{viewer_port}"
    return server


def log_rows(server, texts: list[str]) -> dict[str, list[tuple[str, str]]]:
    """The conversations holding any of `texts`: id -> its rows (kind, content) in order."""
    db = Path(server.data_dir) / "lang-agent.sqlite3"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        marks = ",".join("?" * len(texts))
        ids = [r[0] for r in conn.execute(
            f"SELECT DISTINCT conversation_id FROM messages WHERE content IN ({marks})", texts)]
        return {cid: conn.execute(
            "SELECT message_type, content FROM messages WHERE conversation_id = ?"
            " ORDER BY sequence_number", (cid,)).fetchall() for cid in ids}


def stateless_flag(server, conversation_id: str) -> int:
    db = Path(server.data_dir) / "lang-agent.sqlite3"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT stateless FROM conversations WHERE conversation_id = ?",
                            (conversation_id,)).fetchone()[0]


def viewer_get(server, path: str) -> str:
    with urllib.request.urlopen(server.viewer + path, timeout=10) as r:
        assert r.status == 200, (path, r.status)
        return r.read().decode()


def assert_one_conversation_of_pairs(server, said: list[str], heard: list[str]):
    convs = log_rows(server, said)
    sizes = sorted(len(rows) for rows in convs.values())
    assert len(convs) == 1, f"{len(said)} stateless turns made {len(convs)} conversations of {sizes} rows"
    (cid, rows), = convs.items()
    expected = [row for pair in zip(said, heard) for row in (("human", pair[0]), ("ai", pair[1]))]
    assert rows == expected, rows
    assert stateless_flag(server, cid) == 1
    return cid


def openai_client(server):
    return openai.OpenAI(base_url=server.openai_base, api_key=API_KEY, max_retries=0, timeout=60)


def test_openai_stateless_turns_make_one_conversation(box):
    """The openai SDK without thread_id, resending the growing dialogue as Xiaozhi's openai
    provider does (its system prompt changes every turn: it carries the time)."""
    client = openai_client(box)
    dialogue, said, heard = [], [], []
    for turn in range(TURNS):
        user = uniq(f"openai stateless turn {turn}")
        said.append(user)
        dialogue.append({"role": "user", "content": user})
        messages = [{"role": "system", "content": f"You are Xiaozhi. Time: 12:{turn:02}"}] + dialogue
        if turn % 2:
            stream = client.chat.completions.create(model="qwen-plus", messages=messages,
                                                    stream=True)
            answer = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
        else:
            r = client.chat.completions.create(model="qwen-plus", messages=messages)
            answer = r.choices[0].message.content
        # The model still sees exactly the client's dialogue.
        assert answer == expected_reply(user, said), answer
        heard.append(answer)
        dialogue.append({"role": "assistant", "content": answer})
    assert_one_conversation_of_pairs(box, said, heard)


def test_dashscope_calls_without_session_make_one_conversation(box):
    """DashScope Application.call without session_id, the way Xiaozhi's AliBL provider sends
    a dialogue (messages plus the last user text as prompt), streamed and not."""
    turns: list[tuple[str, str]] = []
    said, heard = [], []
    for turn in range(TURNS):
        user = uniq(f"dashscope stateless turn {turn}")
        said.append(user)
        dialogue = [{"role": "system", "content": f"You are Xiaozhi. Time: 13:{turn:02}"}]
        for u, a in turns:
            dialogue += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        dialogue.append({"role": "user", "content": user})
        if turn % 2:
            events = list(xiaozhi_call(box, None, dialogue))
            answer = xiaozhi_spoken(events)
        else:
            r = ds_call(box, messages=dialogue, prompt=user)
            assert r.status_code == HTTPStatus.OK, describe([r])
            answer = r.output.text
        assert answer == expected_reply(user, said), answer
        heard.append(answer)
        turns.append((user, answer))
    assert_one_conversation_of_pairs(box, said, heard)


def test_a_changed_earlier_message_starts_a_new_conversation(box):
    client = openai_client(box)
    first, second, third = uniq("first"), uniq("second"), uniq("third")
    dialogue = [{"role": "user", "content": first}]
    a1 = client.chat.completions.create(model="qwen-plus", messages=dialogue) \
        .choices[0].message.content
    dialogue += [{"role": "assistant", "content": a1}, {"role": "user", "content": second}]
    a2 = client.chat.completions.create(model="qwen-plus", messages=dialogue) \
        .choices[0].message.content
    # The client edits what it says it heard: this is no longer the logged dialogue.
    dialogue += [{"role": "assistant", "content": a2 + " (edited)"},
                 {"role": "user", "content": third}]
    client.chat.completions.create(model="qwen-plus", messages=dialogue)
    convs = log_rows(box, [first, second, third])
    assert len(convs) == 2, convs
    # Both hold the second turn; the continued one stops there.
    continued = next(rows for rows in convs.values() if ("human", third) not in rows)
    assert continued == [("human", first), ("ai", a1), ("human", second), ("ai", a2)], continued
    copy = next(rows for rows in convs.values() if ("human", third) in rows)
    assert copy[:4] == [("human", first), ("ai", a1), ("human", second),
                        ("ai", a2 + " (edited)")], copy
    assert copy[4] == ("human", third) and len(copy) == 6, copy


def test_helper_one_shots_are_stateless_and_hidden_by_default(box):
    """Xiaozhi's intent helper: a whole prompt and one user text, no session id."""
    text = uniq("what time is it")
    r = openai_client(box).chat.completions.create(model="qwen-plus", messages=[
        {"role": "system", "content": "Classify the intent of the user's words."},
        {"role": "user", "content": text}])
    answer = r.choices[0].message.content
    convs = log_rows(box, [text])
    assert len(convs) == 1, convs
    (helper, rows), = convs.items()
    assert rows == [("human", text), ("ai", answer)]
    assert stateless_flag(box, helper) == 1

    # A stateless conversation of several exchanges, for contrast.
    client = openai_client(box)
    u1, u2 = uniq("longer"), uniq("longer again")
    a1 = client.chat.completions.create(model="qwen-plus", messages=[
        {"role": "user", "content": u1}]).choices[0].message.content
    client.chat.completions.create(model="qwen-plus", messages=[
        {"role": "user", "content": u1}, {"role": "assistant", "content": a1},
        {"role": "user", "content": u2}])
    (longer, _), = log_rows(box, [u1]).items()

    default = viewer_get(box, "/fragments/sidebar")
    assert helper not in default, "a helper's one-shot is listed by default"
    assert longer in default, "a stateless conversation of several exchanges is hidden"
    shown = viewer_get(box, "/fragments/sidebar?stateless=1")
    assert helper in shown, "the stateless filter does not show the one-shot"
    # Every entry previews its newest message.
    assert answer[:40] in shown, shown

    listing = json.loads(viewer_get(box, "/api/conversations"))
    entry = next(c for c in listing if c["conversation_id"] == helper)
    assert entry["stateless"] is True and entry["preview"] == answer, entry


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_stateless_client_tool_round_trip_stays_one_conversation(box, stream):
    """Xiaozhi's function-call mode: the calls go back to the client, which resends the whole
    dialogue with its tool results; the log keeps one conversation."""
    from test_client_tools import CALL_LIGHT, LIGHT, answer_to, create

    ask = f"{uniq('lights')} {CALL_LIGHT}"
    dialogue = [{"role": "user", "content": ask}]
    text, calls, finish = create(box, dialogue, stream=stream, tools=[LIGHT])
    assert finish == "tool_calls" and [c["function"]["name"] for c in calls] == ["set_light"]
    dialogue += answer_to(calls, {"set_light": "the light is on"})
    text, calls, finish = create(box, dialogue, stream=stream, tools=[LIGHT])
    assert (text, calls, finish) == ("Tool said: the light is on.", [], "stop")

    convs = log_rows(box, [ask])
    assert len(convs) == 1, convs
    (rows,) = convs.values()
    assert [kind for kind, _ in rows] == ["human", "ai", "tool", "ai"], rows
    assert rows[-1] == ("ai", "Tool said: the light is on.")
