"""The sandbox's env vars, from envd in the same sandbox (``GET /envs``).

Asked with the ``X-Access-Token`` the SDK sent to ``/execute`` (secure sandboxes need
it). A plain ``http.client`` call in a thread: no HTTP client library to load.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
from urllib.parse import urlsplit

from hutch.interpreter.languages import ENV_NAME

log = logging.getLogger(__name__)


def _fetch(url: str, token: str | None) -> dict[str, str] | None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=5)
    try:
        headers = {"X-Access-Token": token} if token else {}
        conn.request("GET", (parts.path.rstrip("/") or "") + "/envs", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            log.warning("envd answered %s to GET /envs: %s", resp.status, body[:200])
            return None
        data = json.loads(body)
    except (OSError, ValueError) as e:
        log.warning("could not read the sandbox's env vars from envd at %s: %s", url, e)
        return None
    finally:
        conn.close()
    if not isinstance(data, dict):
        return None
    return {k: v for k, v in data.items() if isinstance(v, str) and ENV_NAME.match(k)}


async def sandbox_envs(envd_url: str, token: str | None) -> dict[str, str] | None:
    """The sandbox's env vars, or ``None`` when envd could not say (tried again later)."""
    if not envd_url:
        return {}
    return await asyncio.to_thread(_fetch, envd_url, token)
