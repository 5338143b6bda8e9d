"""E2B routes the current SDKs or CLI may call that hutch does not serve, answered with a
precise error instead of Starlette's bare ``404 Not Found`` (docs/api.md, "Not served").

- ``/secrets`` and ``/secrets/{secretID}`` (the SDKs' ``Secret`` class): a secret's value
  is a marker that E2B's egress resolves in a sandbox's outgoing requests
  (``${e2b.secrets.<name>}``). Storing secrets without that resolution would accept
  values nothing uses, so every method answers 501 and says so.
- ``POST /access-tokens``: deprecated by E2B in favour of API keys (its spec answers 410);
  410 here too. ``DELETE /access-tokens/{id}``: this server issued none, so 404 naming it.

Each authenticates first, as E2B does: without a key the answer is 401 as on any route.
"""

from __future__ import annotations

from typing import Final, NoReturn

from starlette.requests import Request
from starlette.routing import Route

from hutch.api.http.auth import authenticate_user
from hutch.shared.errors import GoneError, NotFoundError, UnimplementedError

SECRETS_MESSAGE: Final = (
    "secrets are not supported by this server: it does not resolve ${e2b.secrets.<name>} "
    "placeholders in sandbox egress; pass the value in the sandbox's envs instead"
)
ACCESS_TOKENS_MESSAGE: Final = (
    "access tokens are deprecated: use an API key (X-API-Key, E2B_API_KEY) instead"
)


async def secrets(request: Request) -> NoReturn:
    """Any method on ``/secrets`` or ``/secrets/{secretID}`` → 501."""
    await authenticate_user(request)
    raise UnimplementedError(SECRETS_MESSAGE)


async def create_access_token(request: Request) -> NoReturn:
    """``POST /access-tokens`` → 410, as E2B answers it."""
    await authenticate_user(request, api_key_allowed=False)
    raise GoneError(ACCESS_TOKENS_MESSAGE)


async def delete_access_token(request: Request) -> NoReturn:
    """``DELETE /access-tokens/{accessTokenID}`` → 404: none was ever issued here."""
    await authenticate_user(request, api_key_allowed=False)
    token_id = str(request.path_params["token_id"])
    raise NotFoundError(f"access token {token_id} not found: {ACCESS_TOKENS_MESSAGE}")


ROUTES = [
    Route("/secrets", secrets, methods=["GET", "POST"]),
    Route("/secrets/{secret_id}", secrets, methods=["GET", "POST", "DELETE"]),
    Route("/access-tokens", create_access_token, methods=["POST"]),
    Route("/access-tokens/{token_id}", delete_access_token, methods=["DELETE"]),
]
