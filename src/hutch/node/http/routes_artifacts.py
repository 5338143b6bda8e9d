"""``/v1/artifacts/...``: a template's artifact for a peer node (ADR 0029).

``GET /v1/artifacts/{name}`` answers the manifest (``shared.nodewire.ArtifactManifest``);
``GET /v1/artifacts/{name}/parts/{kind}/{id}`` streams one part as a tar, its SHA-256 in
``X-Hutch-Artifact-Digest`` and its size in ``Content-Length`` before the bytes;
``POST /v1/artifacts/{name}/fetch`` makes this node hold ``name``, fetched from the first
of the given peers that serves it. All behind the cluster token, as every node route.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from hutch.node.http.routes_sandboxes import answer, body, service
from hutch.node.templates.transfer import DIGEST_HEADER, Exporter
from hutch.shared import nodewire as wire
from hutch.shared.errors import UnavailableError


def _artifacts(request: Request) -> Exporter:
    exporter = service(request).exporter
    if exporter is None:
        raise UnavailableError("this node serves no artifacts")
    return exporter


async def get_manifest(request: Request) -> Response:
    """``GET /v1/artifacts/{name}``."""
    return answer(await _artifacts(request).manifest(str(request.path_params["name"])))


async def get_part(request: Request) -> Response:
    """``GET /v1/artifacts/{name}/parts/{kind}/{part_id}`` → the part's tar."""
    p = request.path_params
    root, digest = await _artifacts(request).part(str(p["name"]), str(p["kind"]), str(p["part_id"]))
    return StreamingResponse(
        Exporter.stream(root),
        media_type="application/x-tar",
        headers={DIGEST_HEADER: digest.digest, "Content-Length": str(digest.size)},
    )


async def fetch(request: Request) -> Response:
    """``POST /v1/artifacts/{name}/fetch`` → ``FetchedArtifact``."""
    args = await body(request, wire.FetchArtifact)
    name = str(request.path_params["name"])
    fetched = await service(request).fetch_artifact(name, args.sources)
    if fetched is None:
        return answer(wire.FetchedArtifact(name=name, fetched=False))
    return answer(
        wire.FetchedArtifact(
            name=name, fetched=True, source=fetched.source, bytes=fetched.bytes,
            seconds=fetched.seconds,
        )
    )  # fmt: skip


ROUTES = [
    Route(f"{wire.PREFIX}/artifacts/{{name}}", get_manifest, methods=["GET"]),
    Route(
        f"{wire.PREFIX}/artifacts/{{name}}/parts/{{kind}}/{{part_id}}", get_part, methods=["GET"]
    ),
    Route(f"{wire.PREFIX}/artifacts/{{name}}/fetch", fetch, methods=["POST"]),
]
