"""envd's Connect-RPC transport: the ``filesystem.Filesystem`` and ``process.Process`` services."""
