"""Placeholder until these routes land (being written now)."""

from starlette.routing import Route

from hutch.envd.context import Envd


def routes(envd: Envd) -> list[Route]:
    return []
