"""The web dashboard's server side (issue 15, docs/dashboard.md, ADR 0026).

Mounted at ``/dashboard`` inside the api's own app (``hutch serve`` and ``hutch api``: the
same port, no extra process). It serves the built single-page app (``static.py``), signs a
browser in with an API key into a sealed cookie (``sessions.py``, ``routes.py``), and bridges
the browser to three things it may not reach itself:

* the public API (``forward.py``): an in-process ASGI call of the api app with the
  session's key as ``X-API-Key``, so every action meets the SDK's handlers and checks;
* a sandbox's envd (``envd.py``): the file browser's calls, through the sandbox proxy with
  the envd access token added here;
* a PTY in the sandbox (``terminal.py``): a WebSocket bridged to envd's
  ``process.Process/Start``.

The dashboard imports ``hutch.api`` (the key check, the error types) and ``hutch.shared``;
the api never imports it (``create_app(mounts=...)`` takes it as any route), and it reaches
sandboxes only over HTTP, through the proxy (tests/unit/test_import_boundaries.py).
"""
