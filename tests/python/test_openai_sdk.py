"""OpenAI-compatible API, driven through the official `openai` SDK."""

from __future__ import annotations

import json

import pytest

from lahelpers import API_KEY, BAD_KEY, auth, expected_reply, raw_request, raw_sse_lines, uniq

openai = pytest.importorskip("openai")


def client(server, key: str = API_KEY, **kw):
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 60)
    return openai.OpenAI(base_url=server.openai_base, api_key=key, **kw)


def stream_text(stream) -> tuple[str, list]:
    chunks = list(stream)
    text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    return text, chunks


def test_non_stream_chat(server):
    msg = uniq("openai hello")
    r = client(server).chat.completions.create(model="qwen-plus",
                                               messages=[{"role": "user", "content": msg}])
    assert r.choices[0].message.content == expected_reply(msg, [msg]), r
    assert r.choices[0].message.role == "assistant", r
    assert r.choices[0].finish_reason == "stop", r
    assert r.id and r.object == "chat.completion", r
    assert r.usage is not None and r.usage.total_tokens >= 0, r


def test_stream_chat(server):
    msg = uniq("openai stream hello with a reply long enough for several chunks")
    s = client(server).chat.completions.create(model="qwen-plus", stream=True,
                                               messages=[{"role": "user", "content": msg}])
    text, chunks = stream_text(s)
    assert text == expected_reply(msg, [msg]), chunks
    with_content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(with_content) >= 2, f"reply came in one chunk: {chunks}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop", finishes
    assert all(f is None for f in finishes[:-1]), finishes
    assert all(c.object == "chat.completion.chunk" for c in chunks), chunks


def test_stream_include_usage(server):
    msg = uniq("usage please")
    s = client(server).chat.completions.create(model="qwen-plus", stream=True,
                                               stream_options={"include_usage": True},
                                               messages=[{"role": "user", "content": msg}])
    text, chunks = stream_text(s)
    assert text == expected_reply(msg, [msg]), chunks
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage, f"no usage chunk: {chunks}"
    u = usage[-1]
    assert u.prompt_tokens >= 0 and u.completion_tokens >= 0 and u.total_tokens >= 0, u
    assert chunks[-1].usage is not None, "usage chunk must be the last chunk"


def test_thread_id_remembers(server, sid):
    a, b = uniq("first"), uniq("second")
    c = client(server)
    r = c.chat.completions.create(model="qwen-plus", messages=[{"role": "user", "content": a}],
                                  extra_body={"thread_id": sid})
    assert r.choices[0].message.content == expected_reply(a, [a])
    s = c.chat.completions.create(model="qwen-plus", messages=[{"role": "user", "content": b}],
                                  extra_body={"thread_id": sid}, stream=True)
    text, _ = stream_text(s)
    assert text == expected_reply(b, [a, b])


def test_without_thread_id_is_stateless(server):
    a, b, c2 = uniq("a"), uniq("b"), uniq("c")
    c = client(server)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": a},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": b}]
    r = c.chat.completions.create(model="qwen-plus", messages=msgs)
    assert r.choices[0].message.content == expected_reply(b, [a, b])
    r = c.chat.completions.create(model="qwen-plus", messages=[{"role": "user", "content": c2}])
    assert r.choices[0].message.content == expected_reply(c2, [c2]), "state leaked between calls"


def test_delete_memory(server, sid):
    a, b = uniq("remember me"), uniq("after delete")
    c = client(server)
    r = c.chat.completions.create(model="qwen-plus", messages=[{"role": "user", "content": a}],
                                  extra_body={"thread_id": sid})
    assert r.choices[0].message.content == expected_reply(a, [a])
    st, _, body = raw_request(f"{server.base}/v1/memory/{sid}", method="DELETE", headers=auth())
    assert 200 <= st < 300, (st, body)
    r = c.chat.completions.create(model="qwen-plus", messages=[{"role": "user", "content": b}],
                                  extra_body={"thread_id": sid})
    assert r.choices[0].message.content == expected_reply(b, [b]), "memory not deleted"


def test_delete_memory_requires_key(server, sid):
    st, _, body = raw_request(f"{server.base}/v1/memory/{sid}", method="DELETE", headers=auth(BAD_KEY))
    assert st == 401, (st, body)


def test_models_list(server):
    models = client(server).models.list()
    ids = [m.id for m in models]
    assert ids and all(isinstance(i, str) and i for i in ids), ids


def test_wrong_key_raises_authentication_error(server):
    with pytest.raises(openai.AuthenticationError) as ei:
        client(server, key=BAD_KEY).chat.completions.create(
            model="qwen-plus", messages=[{"role": "user", "content": "hi"}])
    body = ei.value.body
    assert isinstance(body, dict) and body.get("message"), body


def test_wrong_key_stream_raises_authentication_error(server):
    with pytest.raises(openai.AuthenticationError):
        s = client(server, key=BAD_KEY).chat.completions.create(
            model="qwen-plus", stream=True, messages=[{"role": "user", "content": "hi"}])
        list(s)


def test_unknown_model_accepted(server):
    msg = uniq("any model")
    r = client(server).chat.completions.create(model="no-such-model-xyz",
                                               messages=[{"role": "user", "content": msg}])
    assert r.choices[0].message.content == expected_reply(msg, [msg])


def test_unicode_roundtrip(server):
    msg = "你好，世界！" + uniq("🙂")
    s = client(server).chat.completions.create(model="qwen-plus", stream=True,
                                               messages=[{"role": "user", "content": msg}])
    text, _ = stream_text(s)
    assert text == expected_reply(msg, [msg])


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_upstream_error_surfaces(server, sid, stream):
    failing = f"{uniq('boom')} [[mock:status=500]]"
    c = client(server)
    with pytest.raises(openai.APIError) as ei:
        r = c.chat.completions.create(model="qwen-plus", stream=stream,
                                      messages=[{"role": "user", "content": failing}],
                                      extra_body={"thread_id": sid})
        if stream:
            list(r)
    assert not isinstance(ei.value, openai.APIConnectionError), repr(ei.value)
    ok = uniq("fine now")
    r = c.chat.completions.create(model="qwen-plus", messages=[{"role": "user", "content": ok}],
                                  extra_body={"thread_id": sid})
    assert r.choices[0].message.content == expected_reply(ok, [failing, ok])


def test_raw_stream_format(server):
    msg = uniq("raw openai")
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": msg}]}).encode()
    st, hdrs, lines = raw_sse_lines(server.base + "/v1/chat/completions", body, auth())
    assert st == 200, lines[:20]
    assert hdrs.get("content-type", "").startswith("text/event-stream"), hdrs
    datas = [l[len("data:"):].strip() for _, l in lines if l.startswith("data:")]
    assert datas and datas[-1] == "[DONE]", datas[-3:]
    text = ""
    for d in datas[:-1]:
        j = json.loads(d)
        for ch in j.get("choices", []):
            text += ch.get("delta", {}).get("content") or ""
    assert text == expected_reply(msg, [msg])
