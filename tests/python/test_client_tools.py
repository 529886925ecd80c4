"""OpenAI client tools and sampling parameters, through the official `openai` SDK.

The standard OpenAI tool loop (Xiaozhi's function-call mode): the client's tools are offered
beside the box's own; a call to a client tool ends the answer with `finish_reason:
"tool_calls"`, the client runs it and sends the `tool` result, and the turn goes on. The fake
upstream calls tools named by `[[mock:call=NAME ARGS]]` and, once results follow the user
message, answers `Tool said: R1 | R2.`, so the answer proves the results reached the model.
"""

from __future__ import annotations

import json

import pytest

from lahelpers import uniq
from test_openai_sdk import client, stream_text

openai = pytest.importorskip("openai")

LIGHT = {"type": "function", "function": {
    "name": "set_light", "description": "Turn the room light on or off.",
    "parameters": {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}}}
CALL_LIGHT = '[[mock:call=set_light {"on": true}]]'
CALL_CALC = '[[mock:call=calculator {"expression": "6 * 7"}]]'


def create(server, messages, *, stream, thread=None, **kw):
    """One chat completion; returns (text, tool calls as dicts, finish_reason)."""
    extra = {"thread_id": thread} if thread else None
    r = client(server).chat.completions.create(model="qwen-plus", messages=messages, stream=stream,
                                               extra_body=extra, **kw)
    if not stream:
        m = r.choices[0].message
        calls = [c.model_dump() for c in (m.tool_calls or [])]
        return m.content or "", calls, r.choices[0].finish_reason
    text, chunks = stream_text(r)
    by_index: dict[int, dict] = {}
    for c in chunks:
        for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            call = by_index.setdefault(d.index, {"id": "", "type": "function",
                                                 "function": {"name": "", "arguments": ""}})
            call["id"] = d.id or call["id"]
            if d.function:
                call["function"]["name"] += d.function.name or ""
                call["function"]["arguments"] += d.function.arguments or ""
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1, chunks
    return text, [by_index[i] for i in sorted(by_index)], finishes[0]


def upstream_calls(mock_llm, msg: str) -> list[dict]:
    """The answering calls the fake upstream got for the turn whose user message holds msg."""
    def holds(q):
        return any(msg in str(m.get("content")) for m in q.get("messages", []) if m.get("role") == "user")
    return [q for q in mock_llm.requests()
            if holds(q) and q.get("response_format", {}).get("type") != "json_object"]


def roles(request: dict) -> list[str]:
    return [m["role"] for m in request["messages"]]


def answer_to(calls: list[dict], results: dict[str, str]) -> list[dict]:
    """The assistant message the client got and one tool message per call, as a client sends them."""
    tool_msgs = [{"role": "tool", "tool_call_id": c["id"], "content": results[c["function"]["name"]]}
                 for c in calls]
    return [{"role": "assistant", "content": None, "tool_calls": calls}] + tool_msgs


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("remembered", [False, True], ids=["stateless", "thread"])
def test_client_tool_round_trip(server, mock_llm, stream, remembered):
    msg = uniq("light please")
    thread = uniq("ct-thread") if remembered else None
    user = {"role": "user", "content": f"{msg} {CALL_LIGHT}"}
    text, calls, finish = create(server, [user], stream=stream, thread=thread, tools=[LIGHT])
    assert finish == "tool_calls", (text, calls)
    assert [c["function"]["name"] for c in calls] == ["set_light"], calls
    assert json.loads(calls[0]["function"]["arguments"]) == {"on": True}, calls
    assert calls[0]["id"], calls

    dialogue = [user] + answer_to(calls, {"set_light": "the light is on"})
    text, calls2, finish = create(server, dialogue, stream=stream, thread=thread, tools=[LIGHT])
    assert (text, calls2, finish) == ("Tool said: the light is on.", [], "stop")
    # The model saw the call and its result, in order: from the request (stateless) or from
    # the thread's memory (remembered), where the request's earlier messages are not used.
    last = upstream_calls(mock_llm, msg)[-1]
    assert roles(last) == ["system", "user", "assistant", "tool"], last["messages"]
    assert last["messages"][2]["tool_calls"][0]["id"] == calls[0]["id"]
    assert last["messages"][3]["tool_call_id"] == calls[0]["id"]

    if remembered:
        # The next turn on the thread remembers the whole exchange, in order.
        follow = uniq("and thanks")
        create(server, dialogue + [{"role": "assistant", "content": text},
                                   {"role": "user", "content": follow}], stream=stream, thread=thread)
        later = upstream_calls(mock_llm, follow)[-1]
        assert roles(later)[1:] == ["user", "assistant", "tool", "assistant", "user"], later["messages"]
        assert later["messages"][4]["content"] == "Tool said: the light is on."


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_box_tool_and_client_tool_in_one_turn(server, mock_llm, stream):
    msg = uniq("compute and light")
    thread = uniq("ct-both")
    user = {"role": "user", "content": f"{msg} {CALL_CALC} {CALL_LIGHT}"}
    text, calls, finish = create(server, [user], stream=stream, thread=thread, tools=[LIGHT])
    # The box ran its calculator itself; the client is handed only its own tool.
    assert finish == "tool_calls", (text, calls)
    assert [c["function"]["name"] for c in calls] == ["set_light"], calls

    dialogue = [user] + answer_to(calls, {"set_light": "light on"})
    text, _, finish = create(server, dialogue, stream=stream, thread=thread, tools=[LIGHT])
    assert (text, finish) == ("Tool said: 42 | light on.", "stop")
    # Memory is a valid OpenAI history: the box's call and result, then the client's call and
    # the client's result.
    last = upstream_calls(mock_llm, msg)[-1]
    assert roles(last) == ["system", "user", "assistant", "tool", "assistant", "tool"], last["messages"]
    box_call, client_call = last["messages"][2], last["messages"][4]
    assert [c["function"]["name"] for c in box_call["tool_calls"]] == ["calculator"]
    assert last["messages"][3]["tool_call_id"] == box_call["tool_calls"][0]["id"]
    assert [c["id"] for c in client_call["tool_calls"]] == [calls[0]["id"]]
    # Client tools and the box's were offered together.
    offered = {t["function"]["name"] for t in upstream_calls(mock_llm, msg)[0]["tools"]}
    assert {"set_light", "calculator"} <= offered, offered


SAMPLING = {"temperature": 0.3, "top_p": 0.9, "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "max_tokens": 50, "stop": ["zzz"], "seed": 7}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_sampling_reaches_the_answering_call_not_the_router(server, mock_llm, stream):
    msg = uniq("sample me")
    create(server, [{"role": "user", "content": msg}], stream=stream, **SAMPLING)
    turn = [q for q in mock_llm.requests()
            if any(m.get("content") == msg for m in q.get("messages", []))]
    router = [q for q in turn if q.get("response_format", {}).get("type") == "json_object"]
    answers = [q for q in turn if q not in router]
    assert router and answers, turn
    for q in router:
        assert not set(SAMPLING) & set(q), q
    for name, value in SAMPLING.items():
        assert answers[-1][name] == value, (name, answers[-1])


def test_tool_choice_and_parallel_calls_reach_the_first_call(server, mock_llm):
    msg = uniq("must call")
    create(server, [{"role": "user", "content": f"{msg} {CALL_LIGHT}"}], stream=False, tools=[LIGHT],
           tool_choice={"type": "function", "function": {"name": "set_light"}},
           parallel_tool_calls=False, temperature=0.1)
    first = upstream_calls(mock_llm, msg)[0]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "set_light"}}, first
    assert first["parallel_tool_calls"] is False and first["temperature"] == 0.1, first


def test_tool_choice_none_withholds_the_client_tools(server, mock_llm):
    msg = uniq("no tools")
    text, calls, finish = create(server, [{"role": "user", "content": f"{msg} {CALL_LIGHT}"}],
                                 stream=False, tools=[LIGHT], tool_choice="none")
    assert (calls, finish) == ([], "stop"), text
    for q in upstream_calls(mock_llm, msg):
        assert "set_light" not in json.dumps(q.get("tools", [])), q


BAD = [
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"presence_penalty": -3}, "presence_penalty"),
    ({"frequency_penalty": 2.5}, "frequency_penalty"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [LIGHT], "tool_choice": {"type": "function", "function": {"name": "fly"}}},
     "tool_choice.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"tools": [LIGHT, {"type": "function", "function": {"name": "calculator"}}]}, "tools[1].function.name"),
]


@pytest.mark.parametrize("params,param", BAD, ids=[p for _, p in BAD])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_out_of_range_parameters_are_400_naming_the_parameter(server, mock_llm, params, param, stream):
    msg = uniq("bad params")
    with pytest.raises(openai.BadRequestError) as raised:
        create(server, [{"role": "user", "content": msg}], stream=stream, **params)
    error = raised.value.body
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error", error
    assert not upstream_calls(mock_llm, msg), "a refused call reached the model"
