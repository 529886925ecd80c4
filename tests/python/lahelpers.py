"""Helpers shared by the test modules (plain functions, no fixtures)."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from http import HTTPStatus
from urllib.parse import urlsplit

API_KEY = "test-key-1"
API_KEY_2 = "test-key-2"
BAD_KEY = "definitely-not-a-valid-key"


def free_port() -> int:
    """A port that was free a moment ago (bind to port 0 and let the OS pick)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uniq(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def expected_reply(last: str, users: list[str]) -> str:
    """The mock upstream's reply rule: `You said: X. I remember: u1 | ... | un.`"""
    return f"You said: {last}. I remember: {' | '.join(users)}."


# ---------------------------------------------------------------------------
# dashscope

def dashscope_version() -> tuple[int, ...]:
    import importlib.metadata as md
    return tuple(int(x) for x in md.version("dashscope").split(".")[:3] if x.isdigit())


def ds_call(server, *, key: str = API_KEY, app_id: str = "any-app", session_id=None,
            messages=None, prompt=None, stream: bool | None = None, **kw):
    """Application.call exactly as a client would, against `server`."""
    import dashscope
    from dashscope import Application

    dashscope.base_http_api_url = server.dashscope_base
    params = dict(api_key=key, app_id=app_id)
    if messages is not None:
        params["messages"] = messages
    if session_id is not None:
        params["session_id"] = session_id
    if prompt is not None:
        params["prompt"] = prompt
    if stream is not None:
        params["stream"] = stream
    params.update(kw)
    return Application.call(**params)


def xiaozhi_call(server, session_id, dialogue, *, stream: bool = True, key: str = API_KEY,
                 app_id: str = "any-app"):
    """What Xiaozhi's AliBL provider does (ali_memory_id unset -> memory_id=None + prompt)."""
    prompt = dialogue[-1].get("content")
    kw = dict(session_id=session_id, messages=dialogue, memory_id=None, prompt=prompt)
    if stream:
        kw["stream"] = True
    return ds_call(server, key=key, app_id=app_id, **kw)


def collect(gen, limit: int = 10000) -> list:
    out = []
    for i, ev in enumerate(gen):
        out.append(ev)
        if i > limit:
            raise AssertionError("stream did not end")
    return out


def describe(events) -> str:
    rows = []
    for e in events:
        out = getattr(e, "output", None)
        rows.append(
            f"  status={e.status_code} code={e.code!r} message={e.message!r} "
            f"text={getattr(out, 'text', None)!r} finish={getattr(out, 'finish_reason', None)!r} "
            f"session={getattr(out, 'session_id', None)!r}"
        )
    return "\n".join(rows) or "  (no events)"


def xiaozhi_spoken(events) -> str:
    """Xiaozhi's delta logic from its AliBL provider (skips non-200 events)."""
    last_text = ""
    spoken = ""
    for resp in events:
        if resp.status_code != HTTPStatus.OK:
            continue
        current = getattr(getattr(resp, "output", None), "text", None)
        if current is None:
            continue
        if len(current) >= len(last_text):
            delta = current[len(last_text):]
        else:
            delta = current
        spoken += delta
        last_text = current
    return spoken


def xiaozhi_dialogue(turns: list[tuple[str, str]], user: str, *, system: str = "You are Xiaozhi.",
                     extra_system: str | None = None, realtime: str | None = None) -> list[dict]:
    """A dialogue shaped like Xiaozhi's get_llm_dialogue_with_memory output."""
    d = [{"role": "system", "content": system}]
    if extra_system:
        d.append({"role": "system", "content": extra_system})
    if realtime:
        d.append({"role": "user", "content": realtime})
    for u, a in turns:
        d.append({"role": "user", "content": u})
        d.append({"role": "assistant", "content": a})
    d.append({"role": "user", "content": user})
    return d


def assert_stream_ok(events, expected: str, session_id: str | None = None):
    """Full-text (non-incremental) stream checks."""
    info = describe(events)
    assert events, "no events"
    assert all(e.status_code == HTTPStatus.OK for e in events), f"non-200 event:\n{info}"
    assert xiaozhi_spoken(events) == expected, f"spoken text differs:\n{info}"
    texts = [e.output.text for e in events]
    for a, b in zip(texts, texts[1:]):
        assert (b or "").startswith(a or ""), f"full-text events must extend each other:\n{info}"
    assert events[-1].output.text == expected, f"last event must carry the whole text:\n{info}"
    assert events[-1].output.finish_reason == "stop", f"last finish_reason:\n{info}"
    for e in events[:-1]:
        assert e.output.finish_reason == "null", f"non-final finish_reason must be 'null':\n{info}"
    if session_id is not None:
        for e in events:
            assert e.output.session_id == session_id, f"session_id not echoed:\n{info}"
    assert_usage(events[-1])


def assert_usage(resp):
    usage = resp.usage
    assert usage is not None, "no usage"
    models = usage.get("models") if hasattr(usage, "get") else getattr(usage, "models", None)
    assert isinstance(models, list) and models, f"usage.models must be a non-empty list: {usage!r}"
    for m in models:
        assert isinstance(m.get("model_id"), str), f"model_id: {m!r}"
        assert isinstance(m.get("input_tokens"), int) and m["input_tokens"] >= 0, f"input_tokens: {m!r}"
        assert isinstance(m.get("output_tokens"), int) and m["output_tokens"] >= 0, f"output_tokens: {m!r}"


def assert_error_surfaced(result, stream: bool):
    """A clear non-200 error: status!=200 with code+message (HTTP error or SSE error event)."""
    if stream:
        events = collect(result)
        errs = [e for e in events if e.status_code != HTTPStatus.OK]
        assert errs, f"expected an error event / non-200 response, got:\n{describe(events)}"
        e = errs[-1]
        assert e is events[-1], f"error must end the stream:\n{describe(events)}"
        assert e.code, f"error without code:\n{describe(events)}"
        assert e.message, f"error without message:\n{describe(events)}"
        return events
    r = result
    assert r.status_code != HTTPStatus.OK, f"expected non-200, got:\n{describe([r])}"
    assert r.code, f"error without code:\n{describe([r])}"
    assert r.message, f"error without message:\n{describe([r])}"
    return [r]


# ---------------------------------------------------------------------------
# raw HTTP (127.0.0.1 only)

def raw_request(url: str, body: bytes | None = None, headers: dict | None = None,
                method: str = "POST", timeout: float = 30.0):
    """Returns (status, headers(dict lower-case), body bytes)."""
    u = urlsplit(url)
    assert u.hostname in ("127.0.0.1", "localhost"), url
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        path = u.path + (("?" + u.query) if u.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def raw_request_big(url: str, body: bytes, headers: dict, timeout: float = 30.0):
    """POST a large body while reading the response at the same time.

    A server may answer (e.g. 413) and close before it has read the whole body; a client that
    only reads after sending everything can then lose the answer to a connection reset. This
    one sends from a thread and reads concurrently, like curl. Returns (status, headers, body)."""
    import socket
    import threading

    u = urlsplit(url)
    assert u.hostname in ("127.0.0.1", "localhost"), url
    sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        head = [f"POST {u.path} HTTP/1.1", f"Host: {u.hostname}:{u.port}",
                f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())

        def send_body():
            try:
                view = memoryview(body)
                for i in range(0, len(body), 65536):
                    sock.sendall(view[i:i + 65536])
            except OSError:
                pass  # server stopped reading: fine, the answer is what counts

        t = threading.Thread(target=send_body, daemon=True)
        t.start()
        r = http.client.HTTPResponse(sock)
        r.begin()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def raw_sse_lines(url: str, body: bytes, headers: dict, timeout: float = 30.0,
                  stop_after_first_data: bool = False):
    """POST and read the response line by line with arrival times.

    Returns (status, headers, [(t_seconds, line_str), ...])."""
    u = urlsplit(url)
    assert u.hostname in ("127.0.0.1", "localhost"), url
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request("POST", u.path, body=body, headers=headers)
        r = conn.getresponse()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        lines = []
        while True:
            line = r.readline()
            if not line:
                break
            lines.append((time.monotonic() - t0, line.decode("utf-8", "replace").rstrip("\r\n")))
            if stop_after_first_data and lines[-1][1].startswith("data:"):
                break
        return r.status, hdrs, lines
    finally:
        conn.close()


def ds_body(messages=None, session_id=None, prompt=None, parameters=None, **input_extra) -> bytes:
    inp = {}
    if messages is not None:
        inp["messages"] = messages
    if prompt is not None:
        inp["prompt"] = prompt
    if session_id is not None:
        inp["session_id"] = session_id
    inp.update(input_extra)
    return json.dumps({"model": "", "parameters": parameters or {}, "input": inp}).encode()


def auth(key: str = API_KEY, extra: dict | None = None) -> dict:
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    h.update(extra or {})
    return h
