"""The HTTP transport of the control plane (E2B's REST API); the domain is ``api/service``."""
