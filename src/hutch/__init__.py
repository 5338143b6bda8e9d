"""hutch: self-hostable sandboxes for AI agents, wire-compatible with E2B."""

__version__ = "0.1.0"
