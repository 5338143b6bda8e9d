"""The built single-page app from ``static/``: files as they are, ``index.html`` for any
other path that is not an asset (the app routes in the browser), a placeholder page while
no app is built yet.

``assets/`` holds the bundler's content-hashed files: cached for a year. Everything else
is revalidated (``no-cache``) so a new build shows at the next load.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from hutch.shared.errors import NotFoundError

#: No inline script or style: the page must pass the app's CSP too.
PLACEHOLDER: Final = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>hutch dashboard</title></head>
<body><main><h1>hutch dashboard</h1>
<p>The dashboard's app is not built into this install
(<code>src/hutch/dashboard/static/</code> has no <code>index.html</code>).
The API answers at <code>/dashboard/api/</code> and <code>/</code>.</p></main></body>
</html>
"""
_IMMUTABLE: Final = "public, max-age=31536000, immutable"


class StaticApp:
    """Serves ``directory`` as the module docstring says."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._files = StaticFiles(directory=directory, check_dir=False)

    async def respond(self, request: Request, path: str) -> Response:
        """The response for ``/dashboard/{path}`` (``path`` without a leading ``/``)."""
        index = self._dir / "index.html"
        if path and path != "index.html":
            try:
                response = await self._files.get_response(path, request.scope)
            except HTTPException as exc:
                if exc.status_code != 404:
                    raise
            else:
                if response.status_code < 400:
                    immutable = path.startswith("assets/")
                    response.headers["cache-control"] = _IMMUTABLE if immutable else "no-cache"
                    return response
            if PurePosixPath(path).suffix:
                # A missing asset is a 404, not the app (a broken build must show).
                raise NotFoundError(
                    f"no dashboard file {path}", public_message=f"No such file: /dashboard/{path}"
                )
        if not index.is_file():
            return HTMLResponse(PLACEHOLDER, headers={"cache-control": "no-cache"})
        return FileResponse(index, headers={"cache-control": "no-cache"})
