"""The MCP gateway that runs inside ``mcp-gateway`` sandboxes (port 50005, docs/mcp.md).

E2B's SDKs run ``mcp-gateway --config '<json>'`` right after creating the sandbox; this
package is that command. It starts the MCP servers the config names (stdio servers as
subprocesses), and serves their tools, prompts and resources behind one streamable-HTTP
endpoint, ``/mcp``, that needs ``Authorization: Bearer <token>``. Written on the ``mcp``
Python SDK (no protocol code of its own). Self-contained: it imports nothing else from
``hutch``, so the template installs it with only ``requirements.txt``.
"""
