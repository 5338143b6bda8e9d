"""The sandbox proxy: routes client traffic to ``(sandbox, port)`` and streams it both ways.

``routing`` (pure parsing) → ``catalog`` (where sandboxes are) → ``server`` (the ASGI app)
and ``websocket`` (the upgrade relay); ``runner`` wires them into a uvicorn server.
See docs/proxy.md.
"""
