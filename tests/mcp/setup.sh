#!/usr/bin/env bash
# Installs the real MCP servers the agent tests talk to, from the package registries only:
# - target/mcp-venv: a Python venv with the official `mcp` package, 1.x, whose FastMCP runs
#   tests/mcp/fastmcp_server.py over streamable HTTP and SSE (2.x renamed FastMCP to
#   MCPServer; the servers Xiaozhi users run are 1.x);
# - target/mcp-node: `@modelcontextprotocol/server-everything` from npm (over stdio).
# Idempotent: what is already installed is left alone. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/mcp-venv
if ! "$venv/bin/python" -c 'import mcp.server.fastmcp' 2>/dev/null; then
    echo "tests/mcp/setup.sh: installing the Python mcp package into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'mcp>=1.9,<2'
fi

node_dir=target/mcp-node
entry="$node_dir/node_modules/@modelcontextprotocol/server-everything/package.json"
if [[ ! -f "$entry" ]]; then
    echo "tests/mcp/setup.sh: installing @modelcontextprotocol/server-everything into $node_dir" >&2
    mkdir -p "$node_dir"
    npm install --silent --no-audit --no-fund --prefix "$node_dir" @modelcontextprotocol/server-everything
fi
