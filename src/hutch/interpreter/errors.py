"""The interpreter's own errors (it ships alone, without ``hutch.shared``).

Each carries its HTTP status; ``app.py`` turns them into responses in one place.
"""

from __future__ import annotations


class InterpreterError(Exception):
    """Base: a request the server cannot satisfy, with a message for the client."""

    status = 500


class BadRequest(InterpreterError):
    status = 400


class LanguageNotInstalled(BadRequest):
    """The language has no kernel here; the message names those that do."""


class ContextNotFound(InterpreterError):
    status = 404


class KernelFailed(InterpreterError):
    """A kernel did not start or restart."""

    status = 500
