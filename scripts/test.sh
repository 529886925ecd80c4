#!/usr/bin/env bash
# All of lang-agent's tests, on a fresh machine or a used one.
#
# Installs what the tests need and is missing (Debian packages, Python venvs and npm packages
# under target/), makes sure the local PostgreSQL is up, builds, then runs the Rust tests (unit and
# integration, against real SQLite files, the real PostgreSQL and the real binary) and the
# Python SDK conformance suite (official dashscope and openai packages as clients).
# Everything talks only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's chromium and chromedriver for the viewer's browser test.
scripts/install-test-deps.sh
# Real MCP servers: the Python `mcp` package (FastMCP) and @modelcontextprotocol/server-everything.
tests/mcp/setup.sh

# The export and viewer tests use the machine's PostgreSQL (trust auth on 127.0.0.1:5432).
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if command -v pg_ctlcluster >/dev/null; then
        echo "test.sh: starting PostgreSQL" >&2
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    fi
fi

echo "==================== cargo build ===================="
cargo build --locked --all-targets

echo "==================== cargo test ===================="
cargo test --locked -- --test-threads="${TEST_THREADS:-4}"

echo "==================== Python SDK conformance ===================="
tests/python/run.sh
