"""envd's plain-HTTP transport: health, init, envs, metrics, files, multipart uploads."""
