"""The one MCP server the gateway serves: every upstream's tools, prompts and resources.

Names are namespaced as Docker's MCP gateway (E2B's) does with its tool-name prefix:
``<server>__<name>`` for tools and prompts (``filesystem__read_file``), the server's config
key made safe for MCP's tool-name alphabet (``catalog.prefix_of``), so two servers' tools
cannot clash. Resource URIs stay as their server gives them (a tool's answer may quote
them); a read goes to the server that listed the URI, else to each server in turn. Calls
are forwarded as they are; a backend's progress notifications go to the caller's progress
token, and a caller's cancellation is sent on to the backend as ``notifications/cancelled``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import McpError
from pydantic import BaseModel

from hutch.mcpgateway.catalog import PREFIX_SEPARATOR
from hutch.mcpgateway.upstream import Upstream

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


def namespaced(prefix: str, name: str) -> str:
    return f"{prefix}{PREFIX_SEPARATOR}{name}"


class Gateway:
    """Routes the front session's requests to the upstreams (in config order)."""

    def __init__(self, upstreams: Sequence[Upstream], *, name: str = "hutch-mcp-gateway"):
        self.upstreams = list(upstreams)
        self._by_prefix = {u.prefix: u for u in self.upstreams}
        self._resource_owner: dict[str, Upstream] = {}
        self.server: Server[Any, Any] = Server(name)
        h = self.server.request_handlers
        h[types.ListToolsRequest] = self._list_tools
        h[types.CallToolRequest] = self._call_tool
        h[types.ListPromptsRequest] = self._list_prompts
        h[types.GetPromptRequest] = self._get_prompt
        h[types.ListResourcesRequest] = self._list_resources
        h[types.ListResourceTemplatesRequest] = self._list_resource_templates
        h[types.ReadResourceRequest] = self._read_resource

    # -- routing ---------------------------------------------------------------------

    def _route(self, name: str, what: str) -> tuple[Upstream, str]:
        prefix, sep, inner = name.partition(PREFIX_SEPARATOR)
        upstream = self._by_prefix.get(prefix) if sep else None
        if upstream is None or not inner:
            raise McpError(
                types.ErrorData(
                    code=types.INVALID_PARAMS,
                    message=f"unknown {what} {name!r} (names are <server>{PREFIX_SEPARATOR}"
                    f"<{what}>; servers: {', '.join(self._by_prefix)})",
                )
            )
        return upstream, inner

    def _with(self, capability: str) -> list[Upstream]:
        return [u for u in self.upstreams if getattr(u.capabilities, capability, None)]

    async def _forward(
        self, upstream: Upstream, request: types.ClientRequest, result: type[R]
    ) -> R:
        """``request`` on ``upstream``; progress and cancellation follow the caller's."""
        ctx = self.server.request_context
        token = ctx.meta.progressToken if ctx.meta is not None else None

        async def progress(value: float, total: float | None, message: str | None) -> None:
            assert token is not None
            await ctx.session.send_progress_notification(
                token, value, total, message, related_request_id=str(ctx.request_id)
            )

        session = upstream.session
        # The id this request will get on the backend (taken before any await), so that a
        # cancellation can name it: ClientSession numbers its requests in order.
        backend_id = session._request_id  # no public accessor in mcp 1.x
        try:
            return await session.send_request(
                request, result, progress_callback=progress if token is not None else None
            )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await session.send_notification(
                    types.ClientNotification(
                        types.CancelledNotification(
                            params=types.CancelledNotificationParams(
                                requestId=backend_id, reason="cancelled by the gateway's client"
                            )
                        )
                    )
                )
            raise

    async def _all_pages(self, upstream: Upstream, method: type, result: type[R]) -> list[R]:
        pages: list[R] = []
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await upstream.session.send_request(
                types.ClientRequest(method(params=params)), result
            )
            pages.append(page)
            cursor = getattr(page, "nextCursor", None)
            if not cursor:
                return pages

    # -- tools -----------------------------------------------------------------------

    async def _list_tools(self, req: types.ListToolsRequest) -> types.ServerResult:
        tools: list[types.Tool] = []
        for u in self._with("tools"):
            for page in await self._all_pages(u, types.ListToolsRequest, types.ListToolsResult):
                tools += [
                    t.model_copy(update={"name": namespaced(u.prefix, t.name)}) for t in page.tools
                ]
        return types.ServerResult(types.ListToolsResult(tools=tools))

    async def _call_tool(self, req: types.CallToolRequest) -> types.ServerResult:
        upstream, name = self._route(req.params.name, "tool")
        params = types.CallToolRequestParams(name=name, arguments=req.params.arguments)
        request = types.ClientRequest(types.CallToolRequest(params=params))
        return types.ServerResult(await self._forward(upstream, request, types.CallToolResult))

    # -- prompts ---------------------------------------------------------------------

    async def _list_prompts(self, req: types.ListPromptsRequest) -> types.ServerResult:
        prompts: list[types.Prompt] = []
        for u in self._with("prompts"):
            pages = await self._all_pages(u, types.ListPromptsRequest, types.ListPromptsResult)
            for page in pages:
                prompts += [
                    p.model_copy(update={"name": namespaced(u.prefix, p.name)})
                    for p in page.prompts
                ]
        return types.ServerResult(types.ListPromptsResult(prompts=prompts))

    async def _get_prompt(self, req: types.GetPromptRequest) -> types.ServerResult:
        upstream, name = self._route(req.params.name, "prompt")
        params = types.GetPromptRequestParams(name=name, arguments=req.params.arguments)
        request = types.ClientRequest(types.GetPromptRequest(params=params))
        return types.ServerResult(await self._forward(upstream, request, types.GetPromptResult))

    # -- resources -------------------------------------------------------------------

    async def _list_resources(self, req: types.ListResourcesRequest) -> types.ServerResult:
        resources: list[types.Resource] = []
        for u in self._with("resources"):
            pages = await self._all_pages(u, types.ListResourcesRequest, types.ListResourcesResult)
            for page in pages:
                for r in page.resources:
                    self._resource_owner.setdefault(str(r.uri), u)
                    resources.append(r)
        return types.ServerResult(types.ListResourcesResult(resources=resources))

    async def _list_resource_templates(
        self, req: types.ListResourceTemplatesRequest
    ) -> types.ServerResult:
        templates: list[types.ResourceTemplate] = []
        for u in self._with("resources"):
            pages = await self._all_pages(
                u, types.ListResourceTemplatesRequest, types.ListResourceTemplatesResult
            )
            for page in pages:
                templates += page.resourceTemplates
        return types.ServerResult(types.ListResourceTemplatesResult(resourceTemplates=templates))

    async def _read_resource(self, req: types.ReadResourceRequest) -> types.ServerResult:
        uri = str(req.params.uri)
        params = types.ReadResourceRequestParams(uri=req.params.uri)
        request = types.ClientRequest(types.ReadResourceRequest(params=params))
        owner = self._resource_owner.get(uri)
        candidates = [owner] if owner else self._with("resources")
        last: McpError | None = None
        for u in candidates:
            try:
                result = await self._forward(u, request, types.ReadResourceResult)
            except McpError as exc:
                last = exc
                continue
            self._resource_owner.setdefault(uri, u)
            return types.ServerResult(result)
        if last is not None:
            raise last
        raise McpError(
            types.ErrorData(code=types.INVALID_PARAMS, message=f"no server has resource {uri}")
        )
