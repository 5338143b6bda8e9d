"""The control plane's domain: sandboxes, keys, templates, the reaper.

Knows nothing of HTTP. Depends only on Protocols: the store's (``api/store/base.py``) and
:class:`~hutch.api.service.ports.NodeClient` (``ports.py``); ``api/app.py`` hands in the
implementations.
"""
