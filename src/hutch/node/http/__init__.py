"""The node API (docs/node-api.md): the node's transport, a Starlette app under ``/v1``."""
