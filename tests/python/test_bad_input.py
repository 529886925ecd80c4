"""Malformed requests over plain HTTP: each must get a 4xx in the protocol's error shape,
and the server must go on serving normal requests afterwards."""

from __future__ import annotations

import json

import pytest

from lahelpers import auth, ds_body, expected_reply, raw_request, raw_request_big, uniq

DS_PATH = "/api/v1/apps/x/completion"
OA_PATH = "/v1/chat/completions"

BIG = 17 * 1024 * 1024  # over the 16 MiB default of --max-body-bytes


def _user(text="hi"):
    return [{"role": "user", "content": text}]


DS_CASES = {
    "non-json": b"this is not json {",
    "json-not-object": b"[1, 2, 3]",
    "messages-is-string": json.dumps({"model": "", "input": {"messages": "hello"}}).encode(),
    "input-is-string": json.dumps({"model": "", "input": "hello"}).encode(),
    "content-is-number": json.dumps({"input": {"messages": [{"role": "user", "content": 123}]}}).encode(),
    "session-id-is-number": json.dumps({"input": {"messages": _user(), "session_id": 42}}).encode(),
    "empty-messages": json.dumps({"model": "", "parameters": {}, "input": {"messages": []}}).encode(),
    "no-input": json.dumps({"model": "", "parameters": {}}).encode(),
    "no-user-message": json.dumps({"input": {"messages": [{"role": "system", "content": "x"}]}}).encode(),
    "invalid-utf8": b'{"input":{"messages":[{"role":"user","content":"bad \xff\xfe bytes"}]}}',
    "huge-session-id": ds_body(_user(), session_id="s" * 10000),
    "unknown-role": json.dumps({"input": {"messages": [{"role": "wizard", "content": "abracadabra"},
                                                        {"role": "user", "content": "hi"}]}}).encode(),
}

OA_CASES = {
    "non-json": b"this is not json {",
    "json-not-object": b"[1, 2, 3]",
    "messages-is-string": json.dumps({"model": "m", "messages": "hello"}).encode(),
    "content-is-number": json.dumps({"model": "m", "messages": [{"role": "user", "content": 123}]}).encode(),
    "thread-id-is-object": json.dumps({"model": "m", "messages": _user(), "thread_id": {"a": 1}}).encode(),
    "empty-messages": json.dumps({"model": "m", "messages": []}).encode(),
    "no-messages": json.dumps({"model": "m"}).encode(),
    "no-user-message": json.dumps({"model": "m", "messages": [{"role": "system", "content": "x"}]}).encode(),
    "invalid-utf8": b'{"model":"m","messages":[{"role":"user","content":"bad \xff\xfe bytes"}]}',
    "huge-thread-id": json.dumps({"model": "m", "messages": _user(), "thread_id": "t" * 10000}).encode(),
    "unknown-role": json.dumps({"model": "m", "messages": [{"role": "wizard", "content": "abracadabra"},
                                                          {"role": "user", "content": "hi"}]}).encode(),
}


def assert_ds_error(status, hdrs, body, expect_status=None):
    assert 400 <= status < 500, f"expected 4xx, got {status}: {body[:300]!r}"
    if expect_status is not None:
        assert status == expect_status, f"expected {expect_status}, got {status}: {body[:300]!r}"
    assert "application/json" in hdrs.get("content-type", ""), f"error content-type: {hdrs}"
    j = json.loads(body)
    assert isinstance(j, dict), j
    assert isinstance(j.get("code"), str) and j["code"], f"DashScope error needs code: {j}"
    assert isinstance(j.get("message"), str) and j["message"], f"DashScope error needs message: {j}"
    assert "request_id" in j, f"DashScope error needs request_id: {j}"


def assert_oa_error(status, hdrs, body, expect_status=None):
    assert 400 <= status < 500, f"expected 4xx, got {status}: {body[:300]!r}"
    if expect_status is not None:
        assert status == expect_status, f"expected {expect_status}, got {status}: {body[:300]!r}"
    assert "application/json" in hdrs.get("content-type", ""), f"error content-type: {hdrs}"
    j = json.loads(body)
    err = j.get("error") if isinstance(j, dict) else None
    assert isinstance(err, dict), f"OpenAI error shape is {{'error': {{...}}}}: {j}"
    assert isinstance(err.get("message"), str) and err["message"], err
    assert isinstance(err.get("type"), str) and err["type"], err
    assert "code" in err, err


def ds_still_ok(server):
    msg = uniq("still alive")
    st, _, body = raw_request(server.base + DS_PATH, ds_body(_user(msg)),
                              auth(extra={"Accept": "application/json"}))
    assert st == 200, f"normal DashScope request after bad input failed: {st} {body[:300]!r}"
    assert json.loads(body)["output"]["text"] == expected_reply(msg, [msg])


def oa_still_ok(server):
    msg = uniq("still alive")
    st, _, body = raw_request(server.base + OA_PATH,
                              json.dumps({"model": "m", "messages": _user(msg)}).encode(), auth())
    assert st == 200, f"normal OpenAI request after bad input failed: {st} {body[:300]!r}"
    assert json.loads(body)["choices"][0]["message"]["content"] == expected_reply(msg, [msg])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("case", list(DS_CASES))
def test_dashscope_bad_input(server, case, stream):
    extra = {"Accept": "text/event-stream", "X-DashScope-SSE": "enable"} if stream else \
        {"Accept": "application/json"}
    st, hdrs, body = raw_request(server.base + DS_PATH, DS_CASES[case], auth(extra=extra))
    assert_ds_error(st, hdrs, body)
    ds_still_ok(server)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("case", list(OA_CASES))
def test_openai_bad_input(server, case, stream):
    body = OA_CASES[case]
    if stream and body.startswith(b'{"model"') and b"\xff" not in body:
        j = json.loads(body)
        j["stream"] = True
        body = json.dumps(j).encode()
    st, hdrs, data = raw_request(server.base + OA_PATH, body, auth())
    assert_oa_error(st, hdrs, data)
    oa_still_ok(server)


def _big_ds_body():
    return ds_body(_user("x" * BIG))


def _big_oa_body():
    return json.dumps({"model": "m", "messages": _user("x" * BIG)}).encode()


def test_dashscope_body_too_large_is_413(server):
    st, hdrs, body = raw_request_big(server.base + DS_PATH, _big_ds_body(), auth())
    assert_ds_error(st, hdrs, body, expect_status=413)
    ds_still_ok(server)


def test_openai_body_too_large_is_413(server):
    st, hdrs, body = raw_request_big(server.base + OA_PATH, _big_oa_body(), auth())
    assert_oa_error(st, hdrs, body, expect_status=413)
    oa_still_ok(server)


def test_dashscope_unknown_app_id_accepted(server):
    msg = uniq("unknown app")
    st, _, body = raw_request(server.base + "/api/v1/apps/no-such-app-123/completion",
                              ds_body(_user(msg)), auth())
    assert st == 200, body[:300]
    assert json.loads(body)["output"]["text"] == expected_reply(msg, [msg])


def test_openai_unknown_model_accepted(server):
    msg = uniq("unknown model")
    st, _, body = raw_request(server.base + OA_PATH,
                              json.dumps({"model": "no-such-model", "messages": _user(msg)}).encode(),
                              auth())
    assert st == 200, body[:300]
    assert json.loads(body)["choices"][0]["message"]["content"] == expected_reply(msg, [msg])


def test_openai_wrong_key_error_shape(server):
    st, hdrs, body = raw_request(server.base + OA_PATH,
                                 json.dumps({"model": "m", "messages": _user()}).encode(),
                                 auth("wrong-key"))
    assert_oa_error(st, hdrs, body, expect_status=401)


def test_unknown_path_is_404(server):
    st, _, _ = raw_request(server.base + "/definitely/not/here", b"{}", auth())
    assert st == 404


def test_get_on_completion_is_4xx(server):
    st, _, _ = raw_request(server.base + DS_PATH, None, auth(), method="GET")
    assert 400 <= st < 500, st
