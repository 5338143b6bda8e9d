"""envd's filesystem domain: paths, permissions, entries, metadata, writes, watches."""
