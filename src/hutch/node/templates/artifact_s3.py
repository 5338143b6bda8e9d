"""The S3 artifact store (issue 11, ADR 0029 amendment): the artifact store's adapter for
a bucket of an S3-compatible object store (AWS S3, MinIO, Ceph RGW), for clusters whose
hosts share no directory. ``HUTCH_NODE_ARTIFACT_S3_BUCKET`` (plus ``_ENDPOINT_URL``,
``_REGION``, ``_PREFIX``) turns it on; credentials come from boto3's chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, a role), as the S3
volume backend's do (ADR 0009, ``hutch.shared.s3``).

The layout and its rules are ``artifact_store.ContentStore``'s; here a key is an object
``<prefix><key>``. A part is streamed from the tar writer into a **multipart upload**
(parts of ``part_size`` bytes, up to ``concurrency`` of them in flight) while hashed; the
upload is completed only when the hash is the digest the part is named by, else aborted,
so a part object exists whole and right or not at all (a part smaller than one upload part
is one ``PutObject``). A fetch streams ``GetObject`` into the fetcher's checked temporary
file (``Fetcher._part``). Every botocore failure becomes ``ArtifactUnavailableError``
(retryable: the fetch goes on to the peers) here, in :meth:`S3Blobs._call`.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, Final

from hutch.shared.errors import ArtifactUnavailableError, HutchError, InvalidArgumentError
from hutch.shared.s3 import s3_client, s3_session

_MISSING: Final = frozenset({"404", "NoSuchKey", "NotFound"})
MIB: Final = 1 << 20


class ArtifactStoreConfigError(InvalidArgumentError):
    """The node's artifact store is configured in a way that cannot work (the message
    names the setting or what the store answered); the node refuses to start."""


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class _Body:
    """A ``GetObject`` body whose read errors are the store's."""

    def __init__(self, body: Any, label: str) -> None:
        self._body = body
        self._label = label

    def read(self, size: int) -> bytes:
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError

        try:
            return self._body.read(size)  # type: ignore[no-any-return]
        except (BotoCoreError, HTTPError, OSError) as exc:
            raise ArtifactUnavailableError(f"{self._label}: reading failed: {exc}") from exc

    def close(self) -> None:
        self._body.close()


class S3Blobs:
    """``artifact_store.Blobs`` as objects ``<prefix><key>`` of ``bucket``.

    ``client``: a boto3 S3 client (default: one from ``hutch.shared.s3`` for
    ``endpoint_url``/``region``); ``part_size``: bytes per multipart upload part (S3's
    least is 5 MiB); ``concurrency``: parts in flight per upload.
    """

    kind = "S3 artifact store"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "artifacts/",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        part_size: int = 16 * MIB,
        concurrency: int = 4,
        client: Any = None,
    ) -> None:
        if part_size < 5 * MIB:
            raise InvalidArgumentError("an S3 multipart part is at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self.concurrency = concurrency
        self.label = f"s3://{bucket}/{prefix}"
        self._session = None
        if client is None:
            self._session = s3_session(region=region)
            client = s3_client(endpoint_url=endpoint_url, region=region, session=self._session,
                               max_pool_connections=concurrency + 4)  # fmt: skip
        self._s3 = client

    # ---- plumbing ------------------------------------------------------------------------

    def _call(self, op: str, key: str, **kwargs: Any) -> Any:
        """``op`` on the client; its failures as ``ArtifactUnavailableError`` (a missing
        object's as ``FileNotFoundError``, for the caller to answer None)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._s3, op)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING:
                raise FileNotFoundError(key) from exc
            raise ArtifactUnavailableError(f"{self.label}{key}: S3 {op}: {exc}") from exc
        except BotoCoreError as exc:
            raise ArtifactUnavailableError(f"{self.label}{key}: S3 {op}: {exc}") from exc

    def check(self) -> None:
        """Refuse a store that cannot work, at node start (``ArtifactStoreConfigError``
        naming what is wrong): no credentials found, the bucket missing, access denied,
        the endpoint unreachable."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = self.endpoint_url or "AWS S3"
        if self._session is not None and self._session.get_credentials() is None:
            raise ArtifactStoreConfigError(
                "the S3 artifact store has no credentials: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or give the host a role) for the node"
            )
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except NoCredentialsError as exc:
            raise ArtifactStoreConfigError(
                f"the S3 artifact store has no credentials ({exc}): set AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY for the node"
            ) from exc
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                msg = (f"bucket {self.bucket!r} (HUTCH_NODE_ARTIFACT_S3_BUCKET) does not "
                       f"exist at {where}: create it first")  # fmt: skip
            elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                msg = (f"access to bucket {self.bucket!r} at {where} was refused ({code}): "
                       "check the node's AWS credentials")  # fmt: skip
            else:
                msg = f"bucket {self.bucket!r} at {where}: {exc}"
            raise ArtifactStoreConfigError(msg) from exc
        except BotoCoreError as exc:
            raise ArtifactStoreConfigError(
                f"the S3 artifact store at {where} (HUTCH_NODE_ARTIFACT_S3_ENDPOINT_URL) "
                f"cannot be reached: {exc}"
            ) from exc

    # ---- Blobs ---------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key, Key=self.prefix + key)
        except FileNotFoundError:
            return False
        return True

    def read(self, key: str) -> bytes | None:
        reader = self.open(key)
        if reader is None:
            return None
        try:
            chunks = []
            while data := reader.read(MIB):
                chunks.append(data)
            return b"".join(chunks)
        finally:
            reader.close()

    def open(self, key: str) -> _Body | None:
        try:
            answer = self._call("get_object", key, Key=self.prefix + key)
        except FileNotFoundError:
            return None
        return _Body(answer["Body"], f"{self.label}{key}")

    def write(self, key: str, data: bytes) -> None:
        self._call("put_object", key, Key=self.prefix + key, Body=data)

    def write_part(self, key: str, produce: Callable[[IO[bytes]], None], digest: str) -> None:
        upload = _Upload(self, key)
        try:
            produce(upload)  # type: ignore[arg-type]
            upload.finish(digest)
        except BaseException:
            upload.abort()
            raise

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("delete_object", key, Key=self.prefix + key)

    def list(self, prefix: str) -> list[str]:
        under = f"{self.prefix}{prefix}/"
        names: list[str] = []
        kwargs: dict[str, Any] = {"Prefix": under, "Delimiter": "/"}
        while True:
            try:
                page = self._call("list_objects_v2", prefix, **kwargs)
            except FileNotFoundError:
                return names
            names.extend(o["Key"][len(under) :] for o in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return sorted(names)
            kwargs["ContinuationToken"] = page["NextContinuationToken"]


class _Upload:
    """One part's upload: a file-like ``write`` that hashes, buffers ``part_size`` bytes
    and hands each full buffer to a worker (at most ``concurrency`` in flight: the tar
    writer waits, so memory stays near ``concurrency x part_size``)."""

    def __init__(self, blobs: S3Blobs, key: str) -> None:
        self._blobs = blobs
        self._key = key
        self._object = blobs.prefix + key
        self.hash = hashlib.sha256()
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._slots = threading.BoundedSemaphore(blobs.concurrency)
        self._pool: ThreadPoolExecutor | None = None

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self._buf += data
        if len(self._buf) >= self._blobs.part_size:
            self._send()
        return len(data)

    def _send(self) -> None:
        if self._upload_id is None:
            started = self._blobs._call("create_multipart_upload", self._key, Key=self._object)
            self._upload_id = str(started["UploadId"])
            self._pool = ThreadPoolExecutor(self._blobs.concurrency,
                                            thread_name_prefix="hutch-s3-part")  # fmt: skip
        body, self._buf = bytes(self._buf), bytearray()
        number = len(self._parts) + 1
        self._slots.acquire()
        for done in self._parts:
            if done.done() and done.exception() is not None:
                self._slots.release()
                raise done.exception()  # type: ignore[misc]
        assert self._pool is not None
        self._parts.append(self._pool.submit(self._put, number, body))

    def _put(self, number: int, body: bytes) -> dict[str, Any]:
        try:
            answer = self._blobs._call(
                "upload_part", self._key, Key=self._object, UploadId=self._upload_id,
                PartNumber=number, Body=body,
            )  # fmt: skip
            return {"PartNumber": number, "ETag": answer["ETag"]}
        finally:
            self._slots.release()

    def finish(self, digest: str) -> None:
        """Make the object exist if what was written has ``digest``; else refuse."""
        got = f"sha256:{self.hash.hexdigest()}"
        if got != digest:
            raise ArtifactUnavailableError(f"{self._key}: the part written has digest {got}")
        if self._upload_id is None:  # smaller than one upload part: one request
            self._blobs._call("put_object", self._key, Key=self._object, Body=bytes(self._buf))
            return
        if self._buf:
            self._send()
        parts = [done.result() for done in self._parts]
        self._blobs._call(
            "complete_multipart_upload", self._key, Key=self._object,
            UploadId=self._upload_id, MultipartUpload={"Parts": parts},
        )  # fmt: skip
        self._close_pool()

    def abort(self) -> None:
        """Drop what was uploaded (best effort: a bucket lifecycle rule for incomplete
        multipart uploads catches an abort that fails)."""
        self._close_pool()
        if self._upload_id is not None:
            with contextlib.suppress(HutchError, FileNotFoundError):
                self._blobs._call("abort_multipart_upload", self._key, Key=self._object,
                                  UploadId=self._upload_id)  # fmt: skip
            self._upload_id = None

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
