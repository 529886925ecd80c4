"""Fixtures for the lang-agent conformance suite.

Starts the fake upstream (`lang-agent mock-llm`) and the server (`lang-agent serve`) as
subprocesses on free 127.0.0.1 ports, waits until they answer, and stops them at the end.
Nothing here talks to any address other than 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BIN = os.environ.get("LANG_AGENT_BIN") or str(REPO / "target" / "debug" / "lang-agent")

from lahelpers import API_KEY, API_KEY_2, free_port  # noqa: E402

HOST = "127.0.0.1"

# Every process started by the suite, so failures can show their logs.
_ALL_PROCS: list["Proc"] = []
# Logs of the processes of this run: target/pytest-logs/<venv name>/ (replaced on each run).
_LOG_ROOT = REPO / "target" / "pytest-logs" / (Path(os.sys.prefix).name or "python")
shutil.rmtree(_LOG_ROOT, ignore_errors=True)
_LOG_ROOT.mkdir(parents=True, exist_ok=True)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Proc:
    """A lang-agent subprocess with its output captured to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], ready_url: str,
                 ready_timeout: float = 20.0):
        self.name = name
        self.args = args
        self.env = env
        self.ready_url = ready_url
        self.ready_timeout = ready_timeout
        self.log_path = _LOG_ROOT / f"{name}-{uuid.uuid4().hex[:8]}.log"
        self.popen: subprocess.Popen | None = None
        self._log_file = None
        _ALL_PROCS.append(self)

    def start(self) -> "Proc":
        if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
            pytest.exit(f"lang-agent binary not found at {BIN} (set LANG_AGENT_BIN or build it)", 2)
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"\n=== start: {' '.join(self.args)}\n".encode())
        self._log_file.flush()
        self.popen = subprocess.Popen(
            self.args, env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(REPO),
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode} before becoming ready\n"
                    f"command: {' '.join(self.args)}\n--- log ---\n{self.log_tail()}"
                )
            try:
                status, _ = http_get(self.ready_url, timeout=1.0)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as e:  # connection refused while starting
                last = repr(e)
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} not ready at {self.ready_url} after {self.ready_timeout}s (last: {last})\n"
            f"command: {' '.join(self.args)}\n--- log ---\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        p = self.popen
        if p is None:
            return
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self._log_file:
            self._log_file.write(f"=== stopped (rc={p.returncode})\n".encode())
            self._log_file.close()
            self._log_file = None
        self.popen = None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_tail(self, since: int = 0, limit: int = 6000) -> str:
        try:
            data = self.log_path.read_bytes()[since:]
        except OSError:
            return ""
        if len(data) > limit:
            data = b"...[cut]...\n" + data[-limit:]
        return data.decode("utf-8", "replace")


class MockLLM:
    def __init__(self, extra_args: list[str] | None = None, port: int | None = None):
        self.port = port or free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.base_url = self.base + "/v1"
        args = [BIN, "mock-llm", "--host", HOST, "--port", str(self.port)] + list(extra_args or [])
        self.proc = Proc("mock-llm", args, dict(os.environ), self.base + "/v1/models")

    def start(self) -> "MockLLM":
        self.proc.start()
        return self

    def stop(self) -> None:
        self.proc.stop()

    def requests(self) -> list[dict]:
        status, body = http_get(self.base + "/mock/requests", timeout=5)
        assert status == 200, f"GET /mock/requests -> {status} {body[:300]!r}"
        data = json.loads(body)
        assert isinstance(data, list), f"/mock/requests is not a JSON array: {body[:300]!r}"
        return data

    def clear(self) -> None:
        req = urllib.request.Request(self.base + "/mock/requests", method="DELETE")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert 200 <= r.status < 300


class Server:
    """`lang-agent serve` bound to a free port, with its own data dir."""

    def __init__(self, upstream_base_url: str, extra_args: list[str] | None = None,
                 data_dir: str | None = None, keys: str = f"{API_KEY},{API_KEY_2}"):
        self.upstream_base_url = upstream_base_url
        self.extra_args = list(extra_args or [])
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="lang-agent-data-")
        self.keys = keys
        self.proc: Proc | None = None
        self.port = None

    def _make_proc(self) -> Proc:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        args = [
            BIN, "serve", "--host", HOST, "--port", str(self.port), "--viewer-port", "0",
            "--data-dir", self.data_dir, "--base-url", self.upstream_base_url,
        ] + self.extra_args
        env = dict(os.environ)
        env["FAST_AUTH_KEYS"] = self.keys
        env["ALI_API_KEY"] = "test-upstream-key"
        # make sure nothing from the developer's shell redirects traffic elsewhere
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            env.pop(k, None)
        env["NO_PROXY"] = "127.0.0.1,localhost"
        return Proc("server", args, env, f"{self.base}/health")

    def start(self) -> "Server":
        self.proc = self._make_proc()
        self.proc.start()
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def restart(self) -> "Server":
        """Stop the server and start it again on the same data dir (new port)."""
        self.stop()
        return self.start()

    @property
    def dashscope_base(self) -> str:
        # what Xiaozhi configures: base_url=http://<box>:8588/api/
        return f"{self.base}/api/"

    @property
    def openai_base(self) -> str:
        return f"{self.base}/v1"

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


# Keep SDKs and urllib from routing 127.0.0.1 through a proxy.
for _k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_k, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"


@pytest.fixture(scope="session")
def mock_llm():
    # A small per-chunk delay makes the mock's chunks arrive as separate events.
    m = MockLLM(["--chunk-delay-ms", "2"]).start()
    yield m
    m.stop()


@pytest.fixture(scope="session")
def make_server():
    """Factory: make_server(upstream_base_url, extra_args=None) -> started Server.

    All servers made this way are stopped at the end of the session."""
    made: list[Server] = []

    def _make(upstream_base_url: str, extra_args: list[str] | None = None,
              start: bool = True, **kw) -> Server:
        s = Server(upstream_base_url, extra_args, **kw)
        made.append(s)
        return s.start() if start else s

    yield _make
    for s in made:
        s.cleanup()


@pytest.fixture(scope="session")
def make_mock():
    made: list[MockLLM] = []

    def _make(extra_args: list[str] | None = None, port: int | None = None) -> MockLLM:
        m = MockLLM(extra_args, port=port)
        made.append(m)
        return m.start()

    yield _make
    for m in made:
        m.stop()


@pytest.fixture(scope="session")
def server(mock_llm, make_server):
    """The shared server, pointed at the shared mock."""
    return make_server(mock_llm.base_url)


@pytest.fixture
def sid():
    """A fresh session / thread id for one test."""
    return "pytest-" + uuid.uuid4().hex[:12]


# ---------------------------------------------------------------------------
# Show the server/mock logs written during a failed test.

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._la_log_marks = {id(p): p.log_size() for p in _ALL_PROCS}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        marks = getattr(item, "_la_log_marks", {})
        for p in _ALL_PROCS:
            since = marks.get(id(p), 0)
            tail = p.log_tail(since=since, limit=4000)
            if tail.strip():
                rep.sections.append((f"{p.name} log ({p.log_path})", tail))


def pytest_report_header(config):
    lines = [f"lang-agent binary: {BIN}", f"process logs: {_LOG_ROOT}"]
    try:
        import importlib.metadata as md
        lines.append("dashscope " + md.version("dashscope") + ", openai " + md.version("openai"))
    except Exception:  # pragma: no cover
        pass
    return lines
