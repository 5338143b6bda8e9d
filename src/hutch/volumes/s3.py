"""The S3 backend: a volume is a key prefix in one bucket of an S3-compatible store (ADR 0009).

Layout: ``<prefix><volume id>/`` holds the volume's root marker (whose metadata records
the quota), ``<prefix><volume id>/<path>`` a file, ``<prefix><volume id>/<path>/`` a
directory marker (directories also exist implicitly when something is under them). Owner,
mode and the ``user.e2b.*`` metadata of an entry are the object's user metadata
(``x-amz-meta-hutch-*``); S3 caps user metadata at 2 KiB, so larger metadata sets are 400
here (envd's rule is 4 KiB).

Consistency (docs/volumes.md; S3 is strongly consistent for single-object operations):

* an upload is staged in a temporary file on the API node, counted against the quota as it
  streams, then sent with one ``PutObject`` (multipart for large files through boto3's
  transfer manager): readers see the old object or the new one, never a mix;
* the quota is checked against a listing of the volume taken when the upload starts: two
  uploads racing on different API nodes can together overshoot it by at most their sizes;
* ``move`` and ``remove`` of a directory are a copy/delete per object, not atomic: a crash
  midway leaves both or part of the tree; a reader may see an intermediate state;
* there are no symlinks, hard links or sandbox mounts (``mountable = False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from hutch.shared.errors import (
    AlreadyExistsError,
    HutchError,
    InsufficientStorageError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from hutch.shared.s3 import s3_client
from hutch.volumes.base import EntryStat, Owner, Usage, display_path, split_parent

log = logging.getLogger("hutch.volumes")

_CHUNK: Final = 1 << 20
_MAX_KEY_BYTES: Final = 1024
_MAX_USER_METADATA: Final = 2048
DEFAULT_UID: Final = 1000
DEFAULT_GID: Final = 1000


def _not_found(rel: str) -> NotFoundError:
    shown = display_path(rel)
    return NotFoundError(f"{shown}: not found", public_message=f"Path {shown} not found")


class _S3File:
    """One object streamed with ranged ``GetObject`` calls."""

    def __init__(self, backend: S3VolumeBackend, key: str, size: int) -> None:
        self._backend = backend
        self._key = key
        self.size = size

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        body = await self._backend._call(
            "get_object",
            Bucket=self._backend.bucket,
            Key=self._key,
            Range=f"bytes={start}-{end - 1}",
        )
        stream = body["Body"]
        try:
            while True:
                data = await asyncio.to_thread(stream.read, _CHUNK)
                if not data:
                    return
                yield data
        finally:
            stream.close()

    async def aclose(self) -> None:
        return None


class S3VolumeBackend:
    """:class:`~hutch.volumes.base.VolumeBackend` on an S3-compatible object store."""

    name = "s3"
    mountable = False

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        prefix: str = "volumes/",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        max_size_bytes: int = 1 << 40,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.max_size_bytes = max_size_bytes
        if client is None:
            client = s3_client(
                endpoint_url=endpoint_url,
                region=region,
                access_key_id=access_key_id,
                secret_access_key=secret_access_key,
            )
        self._s3 = client
        self._quotas: dict[str, int] = {}

    # -- plumbing ------------------------------------------------------------------------

    async def _call(self, op: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(getattr(self._s3, op), **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
                raise NotFoundError(f"s3 {op}: {code}") from exc
            raise HutchError(f"s3 {op} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise UnavailableError(f"s3 {op}: {exc}") from exc

    def _root(self, volume_id: str) -> str:
        return f"{self.prefix}{volume_id}/"

    def _key(self, volume_id: str, rel: str) -> str:
        key = self._root(volume_id) + rel
        if len(key.encode()) > _MAX_KEY_BYTES:
            raise InvalidArgumentError(f"{display_path(rel)}: too long for an S3 key")
        return key

    async def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return await self._call("head_object", Bucket=self.bucket, Key=key)  # type: ignore[no-any-return]
        except NotFoundError:
            return None

    async def _has_children(self, key_prefix: str) -> bool:
        page = await self._call("list_objects_v2", Bucket=self.bucket, Prefix=key_prefix, MaxKeys=1)
        return bool(page.get("KeyCount"))

    async def _list(
        self, key_prefix: str, *, delimiter: str | None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Every object (and, with a delimiter, common prefix) under ``key_prefix``."""
        objects: list[dict[str, Any]] = []
        prefixes: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": key_prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            page = await self._call("list_objects_v2", **kwargs)
            objects.extend(page.get("Contents", []))
            prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
            if not page.get("IsTruncated"):
                return objects, prefixes
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    async def _require_volume(self, volume_id: str) -> int:
        """The volume's quota; :class:`NotFoundError` if it does not exist here."""
        if volume_id in self._quotas:
            return self._quotas[volume_id]
        head = await self._head(self._root(volume_id))
        if head is None:
            raise NotFoundError(f"volume {volume_id}: not in the bucket")
        quota = int(head.get("Metadata", {}).get("hutch-quota", "0"))
        self._quotas[volume_id] = quota
        return quota

    def _metadata(
        self, *, uid: int, gid: int, mode: int, xattrs: Mapping[str, str]
    ) -> dict[str, str]:
        meta = {"hutch-uid": str(uid), "hutch-gid": str(gid), "hutch-mode": str(mode)}
        if xattrs:
            meta["hutch-xattrs"] = json.dumps(dict(xattrs), separators=(",", ":"))
        if sum(len(k) + len(v) for k, v in meta.items()) > _MAX_USER_METADATA:
            raise InvalidArgumentError("metadata: more than the S3 backend's 2 KiB")
        return meta

    def _entry(
        self, rel: str, *, kind: str, size: int, when: datetime, meta: Mapping[str, str]
    ) -> EntryStat:
        default_mode = 0o755 if kind == "directory" else 0o644
        xattrs = json.loads(meta["hutch-xattrs"]) if "hutch-xattrs" in meta else {}
        return EntryStat(
            name=rel.rsplit("/", 1)[-1] if rel else "/",
            type=kind,  # type: ignore[arg-type]
            path=display_path(rel),
            size=size,
            mode=int(meta.get("hutch-mode", default_mode)),
            uid=int(meta.get("hutch-uid", DEFAULT_UID)),
            gid=int(meta.get("hutch-gid", DEFAULT_GID)),
            atime=when,
            mtime=when,
            ctime=when,
            metadata=xattrs,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def capacity_bytes(self) -> int:
        return self.max_size_bytes

    async def create(self, volume_id: str, *, quota_bytes: int) -> None:
        root = self._root(volume_id)
        if await self._head(root) is not None or await self._has_children(root):
            raise AlreadyExistsError(f"volume {volume_id} already exists in the bucket")
        await self._call(
            "put_object", Bucket=self.bucket, Key=root, Body=b"",
            Metadata={**self._metadata(uid=DEFAULT_UID, gid=DEFAULT_GID, mode=0o755, xattrs={}),
                      "hutch-quota": str(quota_bytes)},
        )  # fmt: skip
        self._quotas[volume_id] = quota_bytes

    async def delete(self, volume_id: str) -> None:
        objects, _ = await self._list(self._root(volume_id), delimiter=None)
        keys = [o["Key"] for o in objects]
        for i in range(0, len(keys), 1000):
            await self._call(
                "delete_objects", Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
            )  # fmt: skip
        self._quotas.pop(volume_id, None)

    async def usage(self, volume_id: str) -> Usage:
        quota = await self._require_volume(volume_id)
        objects, _ = await self._list(self._root(volume_id), delimiter=None)
        return Usage(used_bytes=sum(int(o["Size"]) for o in objects), total_bytes=quota)

    async def aclose(self) -> None:
        return None

    async def host_path(self, volume_id: str) -> str:
        raise InvalidArgumentError("volumes on the S3 backend cannot be mounted into sandboxes")

    # -- content ------------------------------------------------------------------------

    async def _kind(self, volume_id: str, rel: str) -> tuple[str, dict[str, Any] | None]:
        """``("file"|"directory"|"missing", head of the object or marker)``."""
        await self._require_volume(volume_id)
        if not rel:
            return "directory", await self._head(self._root(volume_id))
        key = self._key(volume_id, rel)
        head = await self._head(key)
        if head is not None:
            return "file", head
        marker = await self._head(key + "/")
        if marker is not None or await self._has_children(key + "/"):
            return "directory", marker
        return "missing", None

    async def stat(self, volume_id: str, rel: str) -> EntryStat:
        kind, head = await self._kind(volume_id, rel)
        if kind == "missing":
            raise _not_found(rel)
        when = head["LastModified"] if head else datetime.now(UTC)
        return self._entry(
            rel, kind=kind, size=int(head["ContentLength"]) if head and kind == "file" else 0,
            when=when, meta=(head or {}).get("Metadata", {}),
        )  # fmt: skip

    async def list_dir(self, volume_id: str, rel: str, *, depth: int) -> list[EntryStat]:
        if depth < 1:
            raise InvalidArgumentError(f"depth {depth}: must be at least 1")
        kind, _ = await self._kind(volume_id, rel)
        if kind == "missing":
            raise _not_found(rel)
        if kind == "file":
            raise InvalidArgumentError(f"{display_path(rel)} is not a directory")
        out: list[EntryStat] = []
        await self._walk(volume_id, rel, 1, depth, out)
        return out

    async def _walk(
        self, volume_id: str, rel: str, level: int, depth: int, out: list[EntryStat]
    ) -> None:
        base = self._root(volume_id) + (rel + "/" if rel else "")
        objects, prefixes = await self._list(base, delimiter="/")
        children: dict[str, tuple[str, dict[str, Any] | None]] = {}
        for p in prefixes:
            children[p[len(base) : -1]] = ("directory", None)
        for o in objects:
            name = o["Key"][len(base) :]
            if name:  # not the directory's own marker
                children[name] = ("file", o)
        for name in sorted(children):
            kind, obj = children[name]
            child = f"{rel}/{name}" if rel else name
            if kind == "file":
                head = await self._head(obj["Key"]) if obj else None  # type: ignore[index]
                meta = (head or {}).get("Metadata", {})
                out.append(self._entry(child, kind="file", size=int(obj["Size"]),  # type: ignore[index]
                                       when=obj["LastModified"], meta=meta))  # type: ignore[index]  # fmt: skip
            else:
                marker = await self._head(base + name + "/")
                when = marker["LastModified"] if marker else datetime.now(UTC)
                out.append(self._entry(child, kind="directory", size=0, when=when,
                                       meta=(marker or {}).get("Metadata", {})))  # fmt: skip
                if level < depth:
                    await self._walk(volume_id, child, level + 1, depth, out)

    async def _check_no_file_ancestor(self, volume_id: str, rel: str) -> None:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if await self._head(self._key(volume_id, "/".join(parts[:i]))) is not None:
                raise InvalidArgumentError(
                    f"{display_path('/'.join(parts[:i]))} is a file, not a directory"
                )

    async def make_dir(self, volume_id: str, rel: str, *, owner: Owner, parents: bool) -> EntryStat:
        parent, _ = split_parent(rel)
        kind, _ = await self._kind(volume_id, rel)
        if kind == "file":
            raise AlreadyExistsError(f"{display_path(rel)} exists and is not a directory")
        if kind == "directory":
            if not parents:
                raise AlreadyExistsError(f"{display_path(rel)} already exists")
            return await self.stat(volume_id, rel)
        if not parents:
            pkind, _ = await self._kind(volume_id, parent)
            if pkind != "directory":
                raise (
                    _not_found(parent)
                    if pkind == "missing"
                    else InvalidArgumentError(f"{display_path(parent)} is not a directory")
                )
        await self._check_no_file_ancestor(volume_id, rel)
        meta = self._metadata(
            uid=DEFAULT_UID if owner.uid is None else owner.uid,
            gid=DEFAULT_GID if owner.gid is None else owner.gid,
            mode=0o755 if owner.mode is None else owner.mode, xattrs={},
        )  # fmt: skip
        await self._call("put_object", Bucket=self.bucket, Key=self._key(volume_id, rel) + "/",
                         Body=b"", Metadata=meta)  # fmt: skip
        return await self.stat(volume_id, rel)

    async def write_file(
        self,
        volume_id: str,
        rel: str,
        chunks: AsyncIterable[bytes],
        *,
        owner: Owner,
        metadata: Mapping[str, str],
    ) -> EntryStat:
        split_parent(rel)
        if owner.mode is not None and not 0 <= owner.mode <= 0o1777:
            raise InvalidArgumentError(f"mode {owner.mode:o}: only permission bits and sticky")
        quota = await self._require_volume(volume_id)
        key = self._key(volume_id, rel)
        kind, head = await self._kind(volume_id, rel)
        if kind == "directory":
            raise InvalidArgumentError(f"{display_path(rel)} is a directory")
        await self._check_no_file_ancestor(volume_id, rel)
        meta = self._metadata(
            uid=DEFAULT_UID if owner.uid is None else owner.uid,
            gid=DEFAULT_GID if owner.gid is None else owner.gid,
            mode=0o644 if owner.mode is None else owner.mode, xattrs=metadata,
        )  # fmt: skip
        used = (await self.usage(volume_id)).used_bytes
        replaced = int(head["ContentLength"]) if head else 0
        room = quota - used + replaced
        with tempfile.TemporaryFile(prefix="hutch-s3-upload-") as spool:
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > room:
                    raise InsufficientStorageError(
                        f"{display_path(rel)}: the volume is full",
                        public_message="Volume quota exceeded: not enough space left in the volume",
                    )
                await asyncio.to_thread(spool.write, chunk)
            await asyncio.to_thread(spool.seek, 0)
            await self._call(
                "upload_fileobj", Fileobj=spool, Bucket=self.bucket, Key=key,
                ExtraArgs={"Metadata": meta},
            )  # fmt: skip
        return await self.stat(volume_id, rel)

    async def open_file(self, volume_id: str, rel: str) -> _S3File:
        kind, head = await self._kind(volume_id, rel)
        if kind == "missing":
            raise _not_found(rel)
        if kind != "file" or head is None:
            raise InvalidArgumentError(f"{display_path(rel)} is not a regular file")
        return _S3File(self, self._key(volume_id, rel), int(head["ContentLength"]))

    async def remove(self, volume_id: str, rel: str) -> None:
        split_parent(rel)
        kind, _ = await self._kind(volume_id, rel)
        if kind == "missing":
            raise _not_found(rel)
        key = self._key(volume_id, rel)
        if kind == "file":
            await self._call("delete_object", Bucket=self.bucket, Key=key)
            return
        objects, _ = await self._list(key + "/", delimiter=None)
        keys = [o["Key"] for o in objects]
        for i in range(0, len(keys), 1000):
            await self._call(
                "delete_objects", Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
            )  # fmt: skip

    async def move(self, volume_id: str, src: str, dst: str) -> EntryStat:
        split_parent(src)
        dparent, _ = split_parent(dst)
        if dst == src or dst.startswith(src + "/"):
            raise InvalidArgumentError(f"cannot move {display_path(src)} into itself")
        kind, _ = await self._kind(volume_id, src)
        if kind == "missing":
            raise _not_found(src)
        dkind, _ = await self._kind(volume_id, dst)
        if dkind != "missing":
            raise AlreadyExistsError(f"{display_path(dst)} already exists")
        pkind, _ = await self._kind(volume_id, dparent)
        if pkind != "directory":
            raise _not_found(dparent)
        skey, dkey = self._key(volume_id, src), self._key(volume_id, dst)
        if kind == "file":
            pairs = [(skey, dkey)]
        else:
            objects, _ = await self._list(skey + "/", delimiter=None)
            pairs = [(o["Key"], dkey + o["Key"][len(skey) :]) for o in objects]
        for old, new in pairs:
            await self._call("copy_object", Bucket=self.bucket, Key=new,
                             CopySource={"Bucket": self.bucket, "Key": old})  # fmt: skip
        for old, _ in pairs:
            with contextlib.suppress(NotFoundError):
                await self._call("delete_object", Bucket=self.bucket, Key=old)
        return await self.stat(volume_id, dst)

    async def set_attrs(self, volume_id: str, rel: str, *, owner: Owner) -> EntryStat:
        if owner.mode is not None and not 0 <= owner.mode <= 0o1777:
            raise InvalidArgumentError(f"mode {owner.mode:o}: only permission bits and sticky")
        current = await self.stat(volume_id, rel)
        key = self._key(volume_id, rel) if current.type == "file" else (
            self._root(volume_id) + (rel + "/" if rel else "")
        )  # fmt: skip
        meta = self._metadata(
            uid=current.uid if owner.uid is None else owner.uid,
            gid=current.gid if owner.gid is None else owner.gid,
            mode=current.mode if owner.mode is None else owner.mode,
            xattrs=current.metadata,
        )  # fmt: skip
        if not rel:
            root = await self._head(key)
            meta["hutch-quota"] = (root or {}).get("Metadata", {}).get("hutch-quota", "0")
        if await self._head(key) is None:  # an implicit directory gets a marker
            await self._call("put_object", Bucket=self.bucket, Key=key, Body=b"", Metadata=meta)
        else:
            await self._call(
                "copy_object", Bucket=self.bucket, Key=key, Metadata=meta,
                CopySource={"Bucket": self.bucket, "Key": key}, MetadataDirective="REPLACE",
            )  # fmt: skip
        return await self.stat(volume_id, rel)
