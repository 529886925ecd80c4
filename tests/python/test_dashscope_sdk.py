"""DashScope Application API, driven through the official `dashscope` SDK the way Xiaozhi does."""

from __future__ import annotations

import json
import time
from http import HTTPStatus

import pytest

from lahelpers import (API_KEY_2, BAD_KEY, assert_error_surfaced, assert_stream_ok,
                       assert_usage, auth, collect, describe, ds_body, ds_call,
                       expected_reply, free_port, raw_request, raw_sse_lines, uniq, xiaozhi_call,
                       xiaozhi_dialogue, xiaozhi_spoken)

dashscope = pytest.importorskip("dashscope")


# ---------------------------------------------------------------------------
# streaming


def test_stream_xiaozhi_style_full_text(server, sid):
    """Xiaozhi: stream=True, messages=dialogue, prompt=<last user>; deltas computed client-side."""
    msg = uniq("hello there")
    dialogue = xiaozhi_dialogue([], msg)
    events = collect(xiaozhi_call(server, sid, dialogue, stream=True))
    assert_stream_ok(events, expected_reply(msg, [msg]), session_id=sid)


def test_stream_is_really_streamed(server, sid):
    """Text is sent as it arrives: more than one event carries text."""
    msg = uniq("a somewhat longer sentence so that the reply spans many chunks")
    events = collect(ds_call(server, session_id=sid, messages=[{"role": "user", "content": msg}],
                             stream=True))
    assert_stream_ok(events, expected_reply(msg, [msg]), session_id=sid)
    distinct = {e.output.text for e in events if e.output.text}
    assert len(distinct) >= 2, f"reply came in a single event:\n{describe(events)}"


def test_stream_incremental_output_true(server, sid):
    msg = uniq("incremental please")
    events = collect(ds_call(server, session_id=sid, messages=[{"role": "user", "content": msg}],
                             stream=True, incremental_output=True))
    info = describe(events)
    assert all(e.status_code == HTTPStatus.OK for e in events), info
    # SDK passes pieces through unchanged for incremental_output=True (all versions).
    joined = "".join(e.output.text or "" for e in events)
    assert joined == expected_reply(msg, [msg]), f"pieces must join to the reply exactly:\n{info}"
    assert len([e for e in events if e.output.text]) >= 2, f"expected several pieces:\n{info}"
    assert events[-1].output.finish_reason == "stop", info
    for e in events[:-1]:
        assert e.output.finish_reason == "null", info
    assert_usage(events[-1])


def test_stream_incremental_output_false(server, sid):
    """SDK 1.23.1 sends false (server sends full text); newer SDKs send true and merge pieces.
    Either way the caller must see full-text-so-far events, never doubled text."""
    msg = uniq("full text please")
    events = collect(ds_call(server, session_id=sid, messages=[{"role": "user", "content": msg}],
                             stream=True, incremental_output=False))
    assert_stream_ok(events, expected_reply(msg, [msg]), session_id=sid)


def test_stream_unicode_roundtrip(server, sid):
    """SDK 1.23.1 sends \\u-escaped JSON, newer SDKs raw UTF-8; multi-byte text crosses chunk edges."""
    msg = "你好，世界！今天天气怎么样？" + uniq("🙂")
    events = collect(xiaozhi_call(server, sid, xiaozhi_dialogue([], msg), stream=True))
    assert_stream_ok(events, expected_reply(msg, [msg]), session_id=sid)


def test_stream_mock_reply_directive(server, sid):
    text = "Exactly this, and nothing else: 42!"
    msg = f"say it [[mock:reply={text}]]"
    events = collect(ds_call(server, session_id=sid, messages=[{"role": "user", "content": msg}],
                             stream=True))
    assert_stream_ok(events, text, session_id=sid)


# ---------------------------------------------------------------------------
# non-streaming (older Xiaozhi)


def test_non_stream_xiaozhi_style(server, sid):
    msg = uniq("non streaming hello")
    r = xiaozhi_call(server, sid, xiaozhi_dialogue([], msg), stream=False)
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text == expected_reply(msg, [msg]), describe([r])
    assert r.output.finish_reason == "stop", describe([r])
    assert r.output.session_id == sid, describe([r])
    assert r.request_id, "request_id missing"
    assert_usage(r)


def test_second_api_key_accepted(server, sid):
    msg = uniq("other key")
    r = ds_call(server, key=API_KEY_2, session_id=sid, messages=[{"role": "user", "content": msg}])
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text == expected_reply(msg, [msg])


# ---------------------------------------------------------------------------
# memory


def test_memory_same_session_xiaozhi_resends_dialogue(server, sid):
    first, second = uniq("first"), uniq("second")
    d1 = xiaozhi_dialogue([], first, realtime="当前时间：12:00\n<memory>\nnothing\n</memory>")
    ev1 = collect(xiaozhi_call(server, sid, d1, stream=True))
    r1 = expected_reply(first, [first])
    assert_stream_ok(ev1, r1, session_id=sid)
    # Xiaozhi resends the whole dialogue (+ prompt): only the newest user turn may be used.
    d2 = xiaozhi_dialogue([(first, r1)], second, realtime="当前时间：12:01\n<memory>\nnothing\n</memory>")
    ev2 = collect(xiaozhi_call(server, sid, d2, stream=True))
    assert_stream_ok(ev2, expected_reply(second, [first, second]), session_id=sid)


def test_memory_non_stream_then_stream(server, sid):
    a, b, c = uniq("alpha"), uniq("beta"), uniq("gamma")
    r = ds_call(server, session_id=sid, messages=[{"role": "user", "content": a}])
    assert r.status_code == HTTPStatus.OK and r.output.text == expected_reply(a, [a]), describe([r])
    r = ds_call(server, session_id=sid, prompt=b)  # prompt only, no messages
    assert r.status_code == HTTPStatus.OK and r.output.text == expected_reply(b, [a, b]), describe([r])
    ev = collect(ds_call(server, session_id=sid, messages=[{"role": "user", "content": c}], stream=True))
    assert_stream_ok(ev, expected_reply(c, [a, b, c]), session_id=sid)


def test_new_session_uses_only_newest_user_turn(server, sid):
    """With a session id the request's older turns are not replayed into the thread."""
    old, new = uniq("old-from-client"), uniq("new")
    dialogue = xiaozhi_dialogue([(old, "some answer")], new)
    r = ds_call(server, session_id=sid, messages=dialogue)
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text == expected_reply(new, [new]), describe([r])


def test_sessions_are_isolated(server):
    s1, s2 = uniq("sess"), uniq("sess")
    a, b = uniq("in-s1"), uniq("in-s2")
    r = ds_call(server, session_id=s1, messages=[{"role": "user", "content": a}])
    assert r.output.text == expected_reply(a, [a]), describe([r])
    r = ds_call(server, session_id=s2, messages=[{"role": "user", "content": b}])
    assert r.output.text == expected_reply(b, [b]), describe([r])


def test_no_session_answers_from_messages_and_returns_new_id(server):
    a, b = uniq("a"), uniq("b")
    msgs = [{"role": "system", "content": "helper prompt"}, {"role": "user", "content": a},
            {"role": "assistant", "content": "whatever"}, {"role": "user", "content": b}]
    r = ds_call(server, messages=msgs)
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text == expected_reply(b, [a, b]), describe([r])
    assert isinstance(r.output.session_id, str) and r.output.session_id, describe([r])
    r2 = ds_call(server, messages=msgs)
    assert r2.output.session_id and r2.output.session_id != r.output.session_id, \
        "each session-less call must get a new session id"


def test_no_session_id_returned_continues_conversation(server):
    a, b = uniq("start"), uniq("continue")
    ev = collect(ds_call(server, messages=[{"role": "user", "content": a}], stream=True))
    new_id = ev[-1].output.session_id if ev else None
    assert new_id, f"no session id returned:\n{describe(ev)}"
    assert xiaozhi_spoken(ev) == expected_reply(a, [a]), describe(ev)
    assert all(e.output.session_id == new_id for e in ev), describe(ev)
    r = ds_call(server, session_id=new_id, messages=[{"role": "user", "content": b}])
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text == expected_reply(b, [a, b]), describe([r])


def test_repeated_last_user_message_counts_once(server, sid):
    msg = uniq("say once")
    r = ds_call(server, session_id=sid, messages=[{"role": "user", "content": msg}], prompt=msg)
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text == expected_reply(msg, [msg]), describe([r])


def test_repeated_last_user_message_counts_once_without_session(server):
    a, msg = uniq("earlier"), uniq("say once")
    msgs = [{"role": "user", "content": a}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": msg}]
    r = ds_call(server, messages=msgs, prompt=msg)
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text == expected_reply(msg, [a, msg]), describe([r])


def test_complex_xiaozhi_dialogue_accepted(server, sid):
    """Several system messages, tool_calls without content, tool messages."""
    msg = uniq("what is the weather")
    dialogue = [
        {"role": "system", "content": "static prompt"},
        {"role": "system", "content": "<context>\n- 日期：2025-01-01\n</context>"},
        {"role": "user", "content": "当前时间：12:00\n<memory>\nuser likes tea\n</memory>"},
        {"role": "user", "content": "turn on the light"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "index": 0,
                                              "function": {"name": "light_on", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "ok"}'},
        {"role": "assistant", "content": "The light is on."},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_2", "type": "function",
                         "function": {"name": "x", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "done"},
        {"role": "user", "content": msg},
    ]
    events = collect(xiaozhi_call(server, sid, dialogue, stream=True))
    info = describe(events)
    assert all(e.status_code == HTTPStatus.OK for e in events), info
    spoken = xiaozhi_spoken(events)
    assert spoken.startswith(f"You said: {msg}. I remember: "), info
    assert events[-1].output.finish_reason == "stop", info


def test_upstream_gets_server_system_prompt_first(server, mock_llm, sid):
    marker = uniq("CLIENT-SYSTEM-MARKER")
    msg = uniq("check system prompt")
    mock_llm.clear()
    dialogue = [{"role": "system", "content": f"{marker} you are a pirate"},
                {"role": "system", "content": f"{marker} second system"},
                {"role": "user", "content": msg}]
    r = ds_call(server, session_id=sid, messages=dialogue)
    assert r.status_code == HTTPStatus.OK, describe([r])
    # The answering call (the router runs beside it and keeps its own prompt).
    reqs = [q for q in mock_llm.requests()
            if q.get("messages") and q["messages"][-1].get("content") == msg
            and (q.get("response_format") or {}).get("type") != "json_object"]
    assert reqs, f"upstream never got the turn; requests: {json.dumps(mock_llm.requests())[:2000]}"
    msgs = reqs[-1]["messages"]
    assert msgs[0]["role"] == "system", f"first upstream message must be the server's system prompt: {msgs}"
    system = msgs[0].get("content") or ""
    # The box's prompt leads; the client's system texts follow it (--client-prompt append).
    assert not system.startswith(marker), f"the client's text replaced the box's prompt: {system}"
    assert system.index("<client_instructions>") < system.index(f"{marker} you are a pirate"), system
    assert [m["role"] for m in msgs].count("system") == 1, msgs
    assert msgs[-1] == {"role": "user", "content": msg} or (
        msgs[-1]["role"] == "user" and msgs[-1]["content"] == msg), msgs[-1]


# ---------------------------------------------------------------------------
# auth


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_wrong_key_is_401_invalid_api_key(server, sid, stream):
    res = ds_call(server, key=BAD_KEY, session_id=sid,
                  messages=[{"role": "user", "content": "hi"}], stream=stream or None)
    events = collect(res) if stream else [res]
    assert len(events) == 1, describe(events)
    r = events[0]
    assert r.status_code == 401, describe(events)
    assert r.code == "InvalidApiKey", describe(events)
    assert r.message, describe(events)


def test_wrong_key_raw_error_shape(server):
    st, hdrs, body = raw_request(server.base + "/api/v1/apps/any-app/completion",
                                 ds_body([{"role": "user", "content": "hi"}]), auth(BAD_KEY))
    assert st == 401, (st, body)
    assert "application/json" in hdrs.get("content-type", ""), hdrs
    j = json.loads(body)
    assert j.get("code") == "InvalidApiKey" and j.get("message") and "request_id" in j, j


def test_missing_authorization_is_401(server):
    st, _, body = raw_request(server.base + "/api/v1/apps/any-app/completion",
                              ds_body([{"role": "user", "content": "hi"}]),
                              {"Content-Type": "application/json"})
    assert st == 401, (st, body)
    assert json.loads(body).get("code") == "InvalidApiKey", body


# ---------------------------------------------------------------------------
# wire format details


@pytest.mark.parametrize("path", ["/api/apps/{app}/completion", "/api/v1/apps/{app}/completion",
                                  "/apps/{app}/completion", "/v1/apps/{app}/completion"])
def test_all_completion_paths_served(server, path):
    msg = uniq("path check")
    st, hdrs, body = raw_request(server.base + path.format(app="some-unknown-app"),
                                 ds_body([{"role": "user", "content": msg}]),
                                 auth(extra={"Accept": "application/json"}))
    assert st == 200, (path, st, body[:500])
    j = json.loads(body)
    assert j["output"]["text"] == expected_reply(msg, [msg]), j
    assert j["output"]["finish_reason"] == "stop", j
    assert j.get("request_id"), j


def test_raw_sse_format(server, sid):
    msg = uniq("raw sse")
    st, hdrs, lines = raw_sse_lines(
        server.base + "/api/v1/apps/any-app/completion",
        ds_body([{"role": "user", "content": msg}], session_id=sid),
        auth(extra={"Accept": "text/event-stream", "X-DashScope-SSE": "enable"}))
    assert st == 200, lines[:20]
    assert hdrs.get("content-type", "").startswith("text/event-stream"), hdrs
    text_lines = [l for _, l in lines]
    datas = [l for l in text_lines if l.startswith("data:")]
    assert datas, text_lines[:40]
    assert any(l.startswith("event:result") for l in text_lines), text_lines[:40]
    assert any(l.startswith("id:") for l in text_lines), text_lines[:40]
    assert any(l.startswith(":HTTP_STATUS/200") for l in text_lines), text_lines[:40]
    payloads = [json.loads(l[len("data:"):]) for l in datas]
    assert payloads[-1]["output"]["text"] == expected_reply(msg, [msg]), payloads[-1]
    assert payloads[-1]["output"]["finish_reason"] == "stop", payloads[-1]
    for p in payloads:
        assert isinstance(p.get("output"), dict), p
        assert p.get("request_id"), p


def test_stream_requested_in_body_is_honoured(server, sid):
    """Clients other than the SDK put stream:true in the body or parameters."""
    msg = uniq("body stream")
    for body in (json.dumps({"input": {"messages": [{"role": "user", "content": msg}]},
                             "parameters": {"stream": True}}).encode(),
                 json.dumps({"input": {"messages": [{"role": "user", "content": msg}]},
                             "stream": True}).encode()):
        st, hdrs, data = raw_request(server.base + "/api/v1/apps/any-app/completion", body,
                                     auth(extra={"Accept": "*/*"}))
        assert st == 200, data[:300]
        assert hdrs.get("content-type", "").startswith("text/event-stream"), (hdrs, data[:300])


# ---------------------------------------------------------------------------
# restart


def test_memory_survives_restart(mock_llm, make_server, sid):
    srv = make_server(mock_llm.base_url)
    before, after = uniq("before-restart"), uniq("after-restart")
    r = ds_call(srv, session_id=sid, messages=[{"role": "user", "content": before}])
    assert r.status_code == HTTPStatus.OK and r.output.text == expected_reply(before, [before]), describe([r])
    srv.restart()
    ev = collect(ds_call(srv, session_id=sid, messages=[{"role": "user", "content": after}], stream=True))
    assert_stream_ok(ev, expected_reply(after, [before, after]), session_id=sid)
    srv.stop()


# ---------------------------------------------------------------------------
# fake stream


@pytest.fixture(scope="module")
def fake_stream_server(mock_llm, make_server):
    return make_server(mock_llm.base_url, ["--fake-stream"])


def test_fake_stream_whole_answer_in_one_event(fake_stream_server, sid):
    msg = uniq("fake stream please, with a reply long enough to need several chunks")
    events = collect(xiaozhi_call(fake_stream_server, sid, xiaozhi_dialogue([], msg), stream=True))
    info = describe(events)
    expected = expected_reply(msg, [msg])
    assert all(e.status_code == HTTPStatus.OK for e in events), info
    with_text = [e for e in events if e.output.text]
    assert with_text and with_text[0].output.text == expected, f"first text event must hold the whole answer:\n{info}"
    assert xiaozhi_spoken(events) == expected, info
    assert events[-1].output.finish_reason == "stop", info


def test_fake_stream_non_stream_call(fake_stream_server, sid):
    msg = uniq("fake non-stream")
    r = ds_call(fake_stream_server, session_id=sid, messages=[{"role": "user", "content": msg}])
    assert r.status_code == HTTPStatus.OK and r.output.text == expected_reply(msg, [msg]), describe([r])


# ---------------------------------------------------------------------------
# upstream errors


@pytest.mark.parametrize("directive", ["[[mock:status=500]]", "[[mock:status=429]]", "[[mock:cut]]"],
                         ids=["status500", "status429", "cut"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
def test_upstream_error_is_clear_and_turn_is_kept(server, sid, directive, stream):
    failing = f"{uniq('failing turn')} {directive}"
    assert_error_surfaced(ds_call(server, session_id=sid, messages=[{"role": "user", "content": failing}],
                                  stream=stream or None), stream)
    ok = uniq("after the failure")
    ev = collect(ds_call(server, session_id=sid, messages=[{"role": "user", "content": ok}], stream=True))
    assert_stream_ok(ev, expected_reply(ok, [failing, ok]), session_id=sid)


def test_upstream_fail_first_is_retried(server, mock_llm, sid):
    msg = f"{uniq('retry me')} [[mock:fail_first=2]]"
    mock_llm.clear()
    ev = collect(ds_call(server, session_id=sid, messages=[{"role": "user", "content": msg}], stream=True))
    assert_stream_ok(ev, expected_reply(msg, [msg]), session_id=sid)
    hits = [q for q in mock_llm.requests() if q.get("messages") and q["messages"][-1].get("content") == msg]
    assert len(hits) >= 3, f"expected >= 3 upstream attempts, saw {len(hits)}"


def test_upstream_down_then_up(make_server, make_mock, sid):
    """Server pointed at a closed port: clear error; the turn is kept; works once upstream is up."""
    port = free_port()
    srv = make_server(f"http://127.0.0.1:{port}/v1")
    failing = uniq("while upstream is down")
    assert_error_surfaced(ds_call(srv, session_id=sid, messages=[{"role": "user", "content": failing}],
                                  stream=True), True)
    r = ds_call(srv, session_id=uniq("other"), messages=[{"role": "user", "content": "x"}])
    assert_error_surfaced(r, False)
    make_mock(port=port)
    ok = uniq("upstream is back")
    ev = collect(ds_call(srv, session_id=sid, messages=[{"role": "user", "content": ok}], stream=True))
    assert_stream_ok(ev, expected_reply(ok, [failing, ok]), session_id=sid)
    srv.stop()


def test_error_event_format_after_cut(server, sid):
    """Mid-stream failure: partial text, then `event:error` with code/message."""
    msg = f"{uniq('cut me off in the middle of a long enough reply')} [[mock:cut]]"
    st, hdrs, lines = raw_sse_lines(
        server.base + "/api/v1/apps/any-app/completion",
        ds_body([{"role": "user", "content": msg}], session_id=sid),
        auth(extra={"Accept": "text/event-stream", "X-DashScope-SSE": "enable"}))
    text_lines = [l for _, l in lines]
    if st != 200:  # failed before the stream began: must be a JSON error
        pytest.fail(f"cut after first tokens should give partial text then an error event; got HTTP {st}")
    assert "event:error" in text_lines, text_lines
    i = text_lines.index("event:error")
    data = next(l for l in text_lines[i:] if l.startswith("data:"))
    j = json.loads(data[len("data:"):])
    assert j.get("code") and j.get("message") and "request_id" in j, j


# ---------------------------------------------------------------------------
# latency, barge-in, keep-alive


@pytest.fixture(scope="module")
def slow_pair(make_mock, make_server):
    m = make_mock(["--chunk-delay-ms", "100"])
    return make_server(m.base_url)


LONG = ("Well, let me think about that for a moment. The answer is a long one, so it will take "
        "a while to arrive, chunk by chunk, over the wire.")


def test_first_text_arrives_before_upstream_finishes(slow_pair, sid):
    msg = f"talk slowly [[mock:reply={LONG}]]"
    t0 = time.monotonic()
    first_at = None
    events = []
    for ev in ds_call(slow_pair, session_id=sid, messages=[{"role": "user", "content": msg}], stream=True):
        if first_at is None and ev.status_code == HTTPStatus.OK and ev.output.text:
            first_at = time.monotonic() - t0
        events.append(ev)
    total = time.monotonic() - t0
    assert xiaozhi_spoken(events) == LONG, describe(events)
    assert total > 1.0, f"mock should take > 1 s to stream ({total:.2f}s)"
    assert first_at is not None and first_at < total / 2, \
        f"first text at {first_at}s of {total:.2f}s: text is buffered instead of streamed"


def test_barge_in_abandoned_stream(slow_pair, sid):
    msg = f"abandon me [[mock:reply={LONG}]]"
    gen = ds_call(slow_pair, session_id=sid, messages=[{"role": "user", "content": msg}], stream=True)
    first = next(gen)
    assert first.status_code == HTTPStatus.OK, describe([first])
    gen.close()  # Xiaozhi drops the stream when the user talks over the answer
    import dashscope.api_entities.http_request as hr  # close pooled connections (SDK 2.x)
    if hasattr(hr, "close_shared_sync_session"):
        hr.close_shared_sync_session()
    nxt = uniq("next question")
    r = ds_call(slow_pair, session_id=sid, messages=[{"role": "user", "content": nxt}])
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text.startswith(f"You said: {nxt}. I remember: "), describe([r])
    assert r.output.text.endswith(f"{nxt}."), describe([r])


@pytest.fixture(scope="module")
def keepalive_server(mock_llm, make_server):
    return make_server(mock_llm.base_url, ["--keepalive-secs", "1"])


def test_keepalive_comments_while_waiting(keepalive_server, sid):
    msg = f"{uniq('slow upstream')} [[mock:delay=2500]]"
    st, hdrs, lines = raw_sse_lines(
        keepalive_server.base + "/api/v1/apps/any-app/completion",
        ds_body([{"role": "user", "content": msg}], session_id=sid),
        auth(extra={"Accept": "text/event-stream", "X-DashScope-SSE": "enable"}))
    assert st == 200, lines
    first_data = next(i for i, (_, l) in enumerate(lines) if l.startswith("data:"))
    comments = [(t, l) for t, l in lines[:first_data]
                if l.startswith(":") and not l.startswith(":HTTP_STATUS")]
    assert comments, f"no ':' keep-alive comment during a 2.5 s upstream wait: {lines[:first_data + 1]}"
    assert comments[0][0] < 2.0, f"first keep-alive too late: {comments}"
    payload = json.loads([l for _, l in lines if l.startswith("data:")][-1][len("data:"):])
    assert payload["output"]["text"] == expected_reply(msg, [msg]), payload


def test_keepalive_stream_through_sdk(keepalive_server, sid):
    msg = f"{uniq('slow upstream via sdk')} [[mock:delay=2200]]"
    events = collect(xiaozhi_call(keepalive_server, sid, xiaozhi_dialogue([], msg), stream=True))
    assert_stream_ok(events, expected_reply(msg, [msg]), session_id=sid)


def test_health(server):
    st, hdrs, body = raw_request(server.base + "/health", method="GET")
    assert st == 200
    json.loads(body)


# ---------------------------------------------------------------------------
# more protocol details


def test_upstream_history_shape(server, mock_llm, sid):
    """The second turn goes upstream as [server system..., user first, assistant reply1, user second].

    The default route graph makes two calls per turn: the router's (asked for a JSON object) and
    the chat model's, both with the same history; the chat call is the one checked here."""
    first, second = uniq("hist-first"), uniq("hist-second")
    r1 = ds_call(server, session_id=sid, messages=[{"role": "user", "content": first}])
    assert r1.status_code == HTTPStatus.OK, describe([r1])
    mock_llm.clear()
    d2 = xiaozhi_dialogue([(first, r1.output.text)], second)
    r2 = xiaozhi_call(server, sid, d2, stream=False)
    assert r2.status_code == HTTPStatus.OK, describe([r2])
    turn = [q for q in mock_llm.requests()
            if q.get("messages") and q["messages"][-1].get("content") == second]
    routers = [q for q in turn if (q.get("response_format") or {}).get("type") == "json_object"]
    reqs = [q for q in turn if q not in routers]
    assert len(routers) == 1, f"expected one router request for the turn, got {len(routers)}"
    assert len(reqs) == 1, f"expected exactly one chat request for the turn, got {len(reqs)}"
    msgs = reqs[0]["messages"]
    assert msgs[0]["role"] == "system", msgs
    convo = [(m["role"], m.get("content")) for m in msgs if m["role"] != "system"]
    assert convo == [("user", first), ("assistant", r1.output.text), ("user", second)], msgs
    assert reqs[0].get("stream") is True, "upstream should be streamed"


def test_extra_sdk_parameters_accepted(server, sid):
    msg = uniq("extra params")
    r = ds_call(server, session_id=sid, messages=[{"role": "user", "content": msg}],
                has_thoughts=True, biz_params={"user_defined_params": {"k": "v"}},
                temperature=0.5, top_p=0.8, seed=1234)
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text == expected_reply(msg, [msg]), describe([r])


def test_non_stream_with_default_accept_is_json(server, sid):
    msg = uniq("accept any")
    st, hdrs, body = raw_request(server.base + "/api/v1/apps/any-app/completion",
                                 ds_body([{"role": "user", "content": msg}], session_id=sid),
                                 auth(extra={"Accept": "*/*"}))
    assert st == 200 and "application/json" in hdrs.get("content-type", ""), (st, hdrs, body[:300])
    assert json.loads(body)["output"]["text"] == expected_reply(msg, [msg])


def test_concurrent_streams(slow_pair):
    """Several devices at once: each gets its own answer, and they run in parallel."""
    import threading
    n = 4
    results = {}

    def run(i):
        sid_i = uniq(f"conc{i}")
        text = f"Device {i} answer, streamed slowly in several pieces."
        ev = collect(ds_call(slow_pair, session_id=sid_i, stream=True,
                             messages=[{"role": "user", "content": f"go [[mock:reply={text}]]"}]))
        results[i] = (xiaozhi_spoken(ev), text, describe(ev))

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    assert len(results) == n, f"only {len(results)} of {n} streams finished"
    for i, (spoken, text, info) in results.items():
        assert spoken == text, f"stream {i}:\n{info}"
    # each takes ~0.7 s (7 chunks x 100 ms); serialized would be ~2.8 s
    assert elapsed < 2.2, f"{n} concurrent streams took {elapsed:.2f}s: are they serialized?"


def test_new_turn_while_previous_stream_still_open(slow_pair, sid):
    """Barge-in without closing: Xiaozhi may start the next turn while the old stream is open."""
    first = f"{uniq('long answer')} [[mock:reply={LONG}]]"
    gen = ds_call(slow_pair, session_id=sid, messages=[{"role": "user", "content": first}], stream=True)
    ev0 = next(gen)
    assert ev0.status_code == HTTPStatus.OK, describe([ev0])
    nxt = uniq("interrupting question")
    r = ds_call(slow_pair, session_id=sid, messages=[{"role": "user", "content": nxt}])
    assert r.status_code == HTTPStatus.OK, describe([r])
    assert r.output.text.startswith(f"You said: {nxt}. I remember: {first} | "), describe([r])
    assert r.output.text.endswith(f"{nxt}."), describe([r])
    rest = collect(gen)  # the old stream must end (stop or error), not hang
    assert rest is not None


@pytest.fixture(scope="module")
def app_scope_server(mock_llm, make_server):
    return make_server(mock_llm.base_url, ["--memory-scope", "app"])


def test_memory_scope_app(app_scope_server):
    """--memory-scope app: the app id names the thread, so memory survives a new session id."""
    app = uniq("app")
    a, b = uniq("scope-a"), uniq("scope-b")
    r = ds_call(app_scope_server, app_id=app, session_id=str(__import__("uuid").uuid4()),
                messages=[{"role": "user", "content": a}])
    assert r.status_code == HTTPStatus.OK and r.output.text == expected_reply(a, [a]), describe([r])
    r = ds_call(app_scope_server, app_id=app, session_id=str(__import__("uuid").uuid4()),
                messages=[{"role": "user", "content": b}])
    assert r.status_code == HTTPStatus.OK and r.output.text == expected_reply(b, [a, b]), describe([r])
    c = uniq("scope-c")
    r = ds_call(app_scope_server, app_id=uniq("other-app"), session_id=str(__import__("uuid").uuid4()),
                messages=[{"role": "user", "content": c}])
    assert r.output.text == expected_reply(c, [c]), describe([r])
