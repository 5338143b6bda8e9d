"""Templates on disk: ``<home>/templates/<name>/{template.json,rootfs/}`` and their builders.

``artifact`` holds the format (:class:`TemplateArtifact`) and the directory store;
``busybox`` and ``debian`` build the two default templates from Debian packages. Run
``python -m hutch.node.templates build busybox|base --home DIR``.
"""

from hutch.node.templates.artifact import (
    DirTemplateStore,
    TemplateArtifact,
    TemplateNotFoundError,
)

__all__ = ["DirTemplateStore", "TemplateArtifact", "TemplateNotFoundError"]
