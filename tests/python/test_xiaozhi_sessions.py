"""Xiaozhi's long-lived sessions (issue 9, parts 5-7), through the real `dashscope` SDK.

- Several devices of one app under `--memory-scope app` share a thread, but a device's new
  turn interrupts only a turn of its own session: another session's turn waits its turn.
- Xiaozhi never trims its dialogue and the SDK escapes every Chinese character as 6 bytes, so
  a long connection sends megabytes per call: such a session call is answered, and only its
  newest turn is stored.
- A barge-in ends the interrupted stream like a finished answer (every event 200, the last
  one `finish_reason: "stop"`), so Xiaozhi logs nothing alarming; the log still marks the
  turn interrupted.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from http import HTTPStatus
from pathlib import Path

import pytest

from lahelpers import (API_KEY, collect, describe, ds_call, expected_reply, uniq, xiaozhi_call,
                       xiaozhi_spoken)

dashscope = pytest.importorskip("dashscope")

# Eleven 100 ms pieces of eight characters: a stream that lasts about a second.
LONG = "This answer is streamed slowly, piece by piece, over about one second."


@pytest.fixture(scope="module")
def slow_mock(make_mock):
    return make_mock(["--chunk-delay-ms", "100"])


@pytest.fixture(scope="module")
def app_scope_slow(slow_mock, make_server):
    return make_server(slow_mock.base_url, ["--memory-scope", "app"])


@pytest.fixture(scope="module")
def session_scope_slow(slow_mock, make_server):
    return make_server(slow_mock.base_url)


def db(server) -> sqlite3.Connection:
    return sqlite3.connect(Path(server.data_dir) / "lang-agent.sqlite3", timeout=5)


def turn_statuses(server, thread: str) -> list[str]:
    """The status of every turn of `thread`, oldest first, once none is still running."""
    for _ in range(100):
        with db(server) as c:
            rows = [r[0] for r in c.execute(
                "SELECT status FROM turns WHERE conversation_id = ? ORDER BY id", (thread,))]
        if "running" not in rows:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"a turn of {thread} is still running: {rows}")


def log_rows(server, thread: str) -> list[tuple[str, str, bool]]:
    """(message_type, content, interrupted) of every message of `thread`, in order."""
    with db(server) as c:
        return [(t, text, bool(i)) for t, text, i in c.execute(
            "SELECT message_type, content, interrupted FROM messages "
            "WHERE conversation_id = ? ORDER BY sequence_number", (thread,))]


def in_background(fn):
    """Runs `fn` in a thread; the returned function joins it and gives its result."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join():
        t.join(30)
        assert not t.is_alive(), "the background call did not end"
        if "error" in out:
            raise out["error"]
        return out["value"]

    return join


def assert_all_ok(events, expected: str):
    info = describe(events)
    assert events and all(e.status_code == HTTPStatus.OK for e in events), f"non-200 event:\n{info}"
    assert xiaozhi_spoken(events) == expected, info
    assert events[-1].output.finish_reason == "stop", info


# ---------------------------------------------------------------------------
# 5. app scope: sessions of one app do not interrupt each other


def test_app_scope_sessions_wait_for_each_other_instead_of_interrupting(app_scope_slow):
    """Two Xiaozhi devices of one app (no device id in their session ids): the second
    device's turn waits for the first's answer, then answers remembering it."""
    app = uniq("shared-app")
    first = f"{uniq('device one asks')} [[mock:reply={LONG}]]"
    second = uniq("device two asks")
    stream_one = xiaozhi_call(app_scope_slow, uniq("session-one"), [{"role": "user", "content": first}],
                              app_id=app)
    head = next(stream_one)
    assert head.status_code == HTTPStatus.OK, describe([head])
    # Device two speaks while device one is still hearing its answer.
    two = in_background(lambda: collect(xiaozhi_call(
        app_scope_slow, uniq("session-two"), [{"role": "user", "content": second}], app_id=app)))
    events_one = [head] + collect(stream_one)
    events_two = two()
    assert_all_ok(events_one, LONG)
    assert_all_ok(events_two, expected_reply(second, [first, second]))
    assert turn_statuses(app_scope_slow, app) == ["done", "done"]
    rows = log_rows(app_scope_slow, app)
    assert [(kind, interrupted) for kind, _, interrupted in rows] == [
        ("human", False), ("ai", False), ("human", False), ("ai", False)], rows
    assert rows[1][1] == LONG, rows


def test_app_scope_same_session_still_barges_in(app_scope_slow):
    """Within one session (one device) a new turn still interrupts the answer it talks over."""
    app = uniq("barge-app")
    session = uniq("session")
    first = f"{uniq('long one')} [[mock:reply={LONG}]]"
    nxt = uniq("stop and answer this")
    stream = xiaozhi_call(app_scope_slow, session, [{"role": "user", "content": first}], app_id=app)
    head = next(stream)
    assert head.status_code == HTTPStatus.OK, describe([head])
    r = ds_call(app_scope_slow, app_id=app, session_id=session,
                messages=[{"role": "user", "content": nxt}])
    assert r.status_code == HTTPStatus.OK, describe([r])
    collect(stream)
    assert turn_statuses(app_scope_slow, app) == ["interrupted", "done"]


# ---------------------------------------------------------------------------
# 6. a long Xiaozhi connection: megabytes of dialogue per call

CHINESE = "你好小智今天天气怎么样我们聊聊天吧请讲一个故事给我听谢谢"


def xiaozhi_long_dialogue(turns: int, user: str) -> list[dict]:
    """System prompt, then `turns` user/assistant pairs of Chinese text, then `user`."""
    line = CHINESE * 6  # 180 characters, 1,080 bytes once the SDK escapes them
    d = [{"role": "system", "content": "你是小智，一个友好的语音助手。" * 20}]
    for i in range(turns):
        d.append({"role": "user", "content": f"{i} {line}"})
        d.append({"role": "assistant", "content": f"{i} {line}"})
    d.append({"role": "user", "content": user})
    return d


def test_a_multi_megabyte_xiaozhi_dialogue_is_answered_and_only_its_newest_turn_stored(
        session_scope_slow, sid):
    user = uniq("最新的问题")
    dialogue = xiaozhi_long_dialogue(1600, user)
    wire = len(json.dumps({"input": {"messages": dialogue}}))  # the SDK's json.dumps escapes
    assert wire > 3 * 1024 * 1024, wire
    r = xiaozhi_call(session_scope_slow, sid, dialogue, stream=False)
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text == expected_reply(user, [user]), describe([r])
    rows = log_rows(session_scope_slow, sid)
    assert [(kind, text) for kind, text, _ in rows] == [
        ("human", user), ("ai", expected_reply(user, [user]))], rows[:4]


def test_a_multi_megabyte_dialogue_streams_on_the_next_turn_too(session_scope_slow, sid):
    """The next call of the same connection (one pair longer) streams, remembering the first."""
    first, second = uniq("第一"), uniq("第二")
    r = xiaozhi_call(session_scope_slow, sid, xiaozhi_long_dialogue(1600, first), stream=False)
    assert r.status_code == HTTPStatus.OK, describe([r])
    events = collect(xiaozhi_call(session_scope_slow, sid, xiaozhi_long_dialogue(1601, second)))
    assert_all_ok(events, expected_reply(second, [first, second]))


# ---------------------------------------------------------------------------
# 7. a barge-in ends the old stream like a finished answer


def test_an_interrupted_stream_ends_like_a_finished_answer(session_scope_slow, sid):
    first = f"{uniq('tell me a long story')} [[mock:reply={LONG}]]"
    nxt = uniq("never mind")
    stream = ds_call(session_scope_slow, session_id=sid, stream=True,
                     messages=[{"role": "user", "content": first}])
    head = next(stream)
    assert head.status_code == HTTPStatus.OK, describe([head])
    # Xiaozhi starts the next turn while it still reads the old stream.
    r = ds_call(session_scope_slow, session_id=sid, messages=[{"role": "user", "content": nxt}])
    assert r.status_code == HTTPStatus.OK, describe([r])
    events = [head] + collect(stream)
    info = describe(events)
    assert all(e.status_code == HTTPStatus.OK for e in events), f"an error event:\n{info}"
    assert events[-1].output.finish_reason == "stop", info
    heard = xiaozhi_spoken(events)
    assert heard and LONG.startswith(heard) and heard != LONG, info
    assert turn_statuses(session_scope_slow, sid) == ["interrupted", "done"]
    rows = log_rows(session_scope_slow, sid)
    assert rows[1][0] == "ai" and rows[1][2], f"the first answer is marked interrupted: {rows}"
    assert heard.startswith(rows[1][1]) or rows[1][1].startswith(heard), rows


def test_an_interrupted_openai_stream_ends_with_stop_and_done(session_scope_slow, sid):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=session_scope_slow.openai_base, api_key=API_KEY,
                           max_retries=0, timeout=30)
    first = f"{uniq('a long story')} [[mock:reply={LONG}]]"
    stream = client.chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": first}],
        extra_body={"thread_id": sid})
    chunks = [next(stream)]
    r = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": uniq("stop")}], extra_body={"thread_id": sid})
    assert r.choices[0].finish_reason == "stop", r
    chunks += list(stream)  # raises on an error chunk
    heard = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert heard and LONG.startswith(heard) and heard != LONG, chunks
    assert chunks[-1].choices[0].finish_reason == "stop", chunks
    assert turn_statuses(session_scope_slow, sid) == ["interrupted", "done"]
