"""A real MCP server for lang-agent's agent tests, on the official `mcp` package's FastMCP.

    target/mcp-venv/bin/python tests/mcp/fastmcp_server.py --transport sse --port 8805

Serves on 127.0.0.1 only, over `--transport streamable-http` (at /mcp) or `sse` (at /sse, the
legacy transport Xiaozhi's tool server speaks). Its tools report what they received, so tests
can check what lang-agent sent:

- add(a, b): the sum;
- slow_echo(text, seconds): waits, then returns the text;
- set_brightness(device_id, level): "device <id> brightness <level>" (a device control whose
  device_id lang-agent injects);
- crash(): exits the whole process in the middle of the call (a server dying mid-call);
- unlock_bonus(): adds the tool `bonus` and sends tools/list_changed.
"""

import argparse
import asyncio
import os

from mcp.server.fastmcp import Context, FastMCP

parser = argparse.ArgumentParser()
parser.add_argument("--transport", choices=["streamable-http", "sse"], required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--name", default="fastmcp-test")
args = parser.parse_args()

server = FastMCP(args.name, host="127.0.0.1", port=args.port, log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def slow_echo(text: str, seconds: float) -> str:
    """Wait `seconds`, then return `text`."""
    await asyncio.sleep(seconds)
    return text


@server.tool()
def set_brightness(device_id: str, level: int) -> str:
    """Set the screen brightness (0-100) of a Xiaozhi device."""
    return f"device {device_id} brightness {level}"


@server.tool()
async def crash() -> str:
    """Crash the server while the call is running."""
    await asyncio.sleep(0.2)
    os._exit(3)


@server.tool()
async def unlock_bonus(ctx: Context) -> str:
    """Add the tool `bonus` and tell the client its tool list changed."""

    def bonus() -> str:
        """A tool that appears later."""
        return "bonus!"

    server.add_tool(bonus, name="bonus")
    await ctx.session.send_tool_list_changed()
    return "unlocked"


server.run(transport=args.transport)
