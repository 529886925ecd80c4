"""`lang-agent serve --demo`: the whole box with a built-in canned model, answering the
official dashscope SDK with no LLM key anywhere in its environment."""

from __future__ import annotations

import os
import shutil
import tempfile
from http import HTTPStatus

import pytest

from conftest import BIN, HOST, Proc
from lahelpers import API_KEY, ds_call, free_port


class DemoServer:
    def __init__(self):
        self.data_dir = tempfile.mkdtemp(prefix="lang-agent-demo-")
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("ALI_API_KEY", "ALI_BASE_URL", "FAST_AUTH_KEYS")}
        env["FAST_AUTH_KEYS"] = API_KEY
        self.proc = Proc("demo", [BIN, "serve", "--demo", "--host", HOST, "--port",
                                  str(self.port), "--viewer-port", "0",
                                  "--data-dir", self.data_dir], env, f"{self.base}/health")

    @property
    def dashscope_base(self) -> str:
        return f"{self.base}/api/"


@pytest.fixture(scope="module")
def demo():
    server = DemoServer()
    server.proc.start()
    yield server
    server.proc.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)


def test_the_start_line_says_it_is_a_demo(demo):
    assert "demo (canned answers, no LLM key)" in demo.proc.log_tail()


def test_a_question_gets_a_canned_answer_that_remembers(demo):
    first = ds_call(demo, session_id="demo-chat", prompt="good morning")
    assert first.status_code == HTTPStatus.OK, first
    assert "lang-agent demo" in first.output.text
    assert "first thing you said" in first.output.text
    second = ds_call(demo, session_id="demo-chat", prompt="and again")
    assert "said one thing before" in second.output.text


def test_arithmetic_goes_to_the_calculator_streamed(demo):
    chunks = list(ds_call(demo, session_id="demo-calc", prompt="what is 37 times 49?",
                          stream=True, incremental_output=True))
    assert all(c.status_code == HTTPStatus.OK for c in chunks), chunks
    text = "".join(c.output.text or "" for c in chunks)
    assert text == "The calculator says 1813."
    assert chunks[-1].output.finish_reason == "stop"
