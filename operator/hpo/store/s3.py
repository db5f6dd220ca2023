"""An S3 bucket (MinIO, AWS S3 or any S3-compatible server) as a study's store.

``S3Store`` keeps every key of the ``Store`` interface as the object
``<prefix>/<key>`` of one bucket. What it adds over a plain client:

- **Conditional writes.** ``put_bytes(if_none_match=True)`` sends
  ``If-None-Match: *`` and ``put_bytes(if_match=etag)`` sends
  ``If-Match: "<etag>"``; the server's 412 becomes ``PreconditionFailed``.
- **Bounded retries.** Every call retries transient failures (connection
  errors, timeouts, HTTP 5xx, 429, SlowDown) with exponential backoff and full
  jitter, ``retries`` times at most, then raises ``StoreError`` naming the
  operation, the key and the last error. Errors that do not heal by waiting
  (404, 403, 412, a bad bucket name, a TLS failure) are never retried.
- **No credentials in messages.** Exception messages, log lines, ``uri`` and
  ``repr`` show the endpoint, bucket and prefix only; the keys live only in
  the minio client's credentials provider.

ETags are returned without quotes, so ``put_bytes()`` and ``etag()`` compare
equal, and a single-request PUT's ETag is the MD5 of the data, the same value
``LocalStore`` uses.
"""

from __future__ import annotations

import contextlib
import inspect
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import certifi
import minio
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from hpo import crashpoints
from hpo.store.base import OutputUnwritable, PreconditionFailed, Store
from hpo.store.files import write_atomically
from hpo.store.keys import StoreError, check_key

if TYPE_CHECKING:  # minio's own helper type: read by mypy only
    from minio.helpers import DictType

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``progress(done_bytes, total_bytes)``, called as a file moves.
Progress = Callable[[int, int], None]

# Conditional PUTs go through ``Minio._put_object`` (see ``S3Store._put``): it is
# internal API, so its signature is checked when a store is made and minio is
# pinned (``minio==7.2.20`` in pyproject.toml).
_PUT_OBJECT_PARAMS = ("bucket_name", "object_name", "data", "headers", "query_params")

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

# S3 error codes that a later attempt can succeed on. Any 5xx (but 501) and 429
# count as well, whatever their code.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "OperationAborted",
        # AWS: two conditional writes of one key raced; the loser is told to retry.
        "ConditionalRequestConflict",
        # MinIO while it starts or loses quorum.
        "XMinioServerNotInitialized",
        "XMinioReadQuorum",
        "XMinioWriteQuorum",
    }
)


def _status(exc: BaseException | None) -> int | None:
    if isinstance(exc, S3Error):
        response = getattr(exc, "response", None)
        return getattr(response, "status", None)
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        return getattr(exc, "_code", None)
    return None


def _is_transient(exc: BaseException) -> bool:
    """Whether waiting and trying again can help."""
    if isinstance(exc, urllib3.exceptions.SSLError | urllib3.exceptions.LocationValueError):
        return False  # a certificate or a malformed endpoint does not heal
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, S3Error) and exc.code in _TRANSIENT_CODES:
        return True
    status = _status(exc)
    return status is not None and (status == 429 or (status >= 500 and status != 501))


def _not_sent(exc: BaseException) -> bool:
    """The request never reached the server (it cannot have been applied)."""
    return isinstance(exc, urllib3.exceptions.ConnectTimeoutError)  # NewConnectionError too


def _code(exc: BaseException | None) -> str | None:
    return exc.code if isinstance(exc, S3Error) else None


def _strip_etag(etag: str | None) -> str | None:
    return etag.replace('"', "") if etag else etag


def _check_bucket(bucket: str) -> str:
    ok = (
        isinstance(bucket, str)
        and _BUCKET_RE.fullmatch(bucket) is not None
        and ".." not in bucket
        and ".-" not in bucket
        and "-." not in bucket
    )
    if ok:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(bucket)
            ok = False
    if not ok:
        raise StoreError(
            f"invalid S3 bucket name {bucket!r}: use 3-63 characters of lowercase letters, "
            "digits, '.' and '-', starting and ending with a letter or digit, not an IP address"
        )
    return bucket


def _clean_prefix(prefix: str) -> str:
    prefix = "/".join(part for part in (prefix or "").split("/") if part)
    return check_key(prefix) if prefix else ""


class _ProgressAdapter:
    """minio's progress protocol (``set_meta`` / ``update``) onto ``progress(done, total)``."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.total = 0
        self.done = 0

    def set_meta(self, object_name: str, total_length: int) -> None:
        self.total, self.done = total_length, 0  # a retried upload starts again at 0
        self.progress(0, total_length)

    def update(self, length: int) -> None:
        self.done += length
        self.progress(self.done, self.total)


class S3Store(Store):
    """A bucket (or a prefix of one) on an S3-compatible server.

    Each call makes at most ``retries + 1`` attempts. An attempt waits up to
    ``timeout_s`` to connect and up to ``timeout_s`` for each read; between
    attempts it sleeps a random time in ``[0, min(max_backoff_s, backoff_s * 2**n)]``
    (full jitter). With the defaults a call against a dead endpoint gives up
    after at most 6 x 20 s + 15.5 s; a refused connection fails in well under a
    second per attempt. Call ``ensure_bucket()`` once before use.

    The minio client is thread-safe but must not be shared across processes:
    make one store per process.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        *,
        access_key: str | None,
        secret_key: str | None,
        secure: bool = True,
        region: str | None = None,
        ca_bundle: str | None = None,
        create_bucket: bool = False,
        timeout_s: float = 10.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        # "http://host:9000" is accepted as well: the scheme then decides `secure`.
        for scheme, is_secure in (("http://", False), ("https://", True)):
            if endpoint.lower().startswith(scheme):
                endpoint, secure = endpoint[len(scheme) :], is_secure
        endpoint = endpoint.rstrip("/")
        if not endpoint or "/" in endpoint:
            raise StoreError(f"invalid S3 endpoint {endpoint!r}: expected host[:port]")
        self.endpoint = endpoint
        self.bucket = _check_bucket(bucket)
        self.prefix = _clean_prefix(prefix)
        self.secure = secure
        self.create_bucket = create_bucket
        self.timeout_s = float(timeout_s)
        if retries < 0 or timeout_s <= 0 or backoff_s < 0 or max_backoff_s < 0:
            raise StoreError(
                "S3 store: retries, backoff_s and max_backoff_s must be >= 0 and timeout_s > 0"
            )
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        if bool(access_key) != bool(secret_key):
            raise StoreError(
                f"S3 store {self.uri}: give both an access key and a secret key, or neither"
            )
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            raise StoreError(f"S3 store {self.uri}: CA bundle {ca_bundle} is not a file")
        _check_minio()

        # Our own pool: explicit timeouts, and urllib3's retries off (minio's
        # default retries 5 times inside each call, which would multiply with ours).
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=self.timeout_s, read=self.timeout_s),
            retries=False,
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_bundle or os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        try:
            self._client = Minio(
                endpoint,
                access_key=access_key or None,
                secret_key=secret_key or None,
                secure=secure,
                region=region or None,
                http_client=http,
            )
        except ValueError as exc:  # minio's endpoint checks; its messages hold no keys
            raise StoreError(f"invalid S3 endpoint {endpoint!r}: {exc}") from None

    # -- naming ---------------------------------------------------------------

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def __repr__(self) -> str:
        return (
            f"S3Store(endpoint={self.endpoint!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"
        )

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- retries and messages -------------------------------------------------

    def _transport_reason(self, exc: BaseException) -> str | None:
        """Why the request got no HTTP answer, or None if it got one."""
        if isinstance(exc, urllib3.exceptions.NewConnectionError):
            return str(exc).removeprefix(f"{exc.conn}: ")
        if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
            return f"connection timed out after {self.timeout_s:g}s"
        if isinstance(exc, urllib3.exceptions.ReadTimeoutError | TimeoutError):
            return f"no answer within {self.timeout_s:g}s"
        if isinstance(exc, urllib3.exceptions.SSLError):
            return f"TLS error: {exc}"
        if isinstance(exc, urllib3.exceptions.ProtocolError):
            return f"connection broke: {exc}"
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            return f"{type(exc).__name__}: {exc}"
        return None

    def _describe(self, exc: BaseException) -> str:
        """One line about an error, never with request headers (they hold the signature)."""
        reason = self._transport_reason(exc)
        if reason is not None:
            if _not_sent(exc):
                return f"cannot reach S3 endpoint {self.endpoint}: {reason}"
            return f"S3 endpoint {self.endpoint}: {reason}"
        if isinstance(exc, S3Error):
            return f"{exc.code} (HTTP {_status(exc)}): {exc.message}"
        if isinstance(exc, ServerError):
            return f"HTTP {exc.status_code} from S3 endpoint {self.endpoint}"
        if isinstance(exc, InvalidResponseError):
            return f"HTTP {_status(exc)} with a non-S3 answer from {self.endpoint}"
        return f"{type(exc).__name__}: {exc}"

    def _retrying(self, what: str, fn: Callable[[], T], attempts: list[int]) -> T:
        """Run ``fn`` with the retry policy; ``attempts[0]`` counts the tries made."""

        def attempt() -> T:
            attempts[0] += 1
            return fn()

        def before_sleep(state) -> None:
            exc = state.outcome.exception()
            log.warning(
                "%s: attempt %d of %d failed (%s); retrying in %.2fs",
                what,
                state.attempt_number,
                self.retries + 1,
                self._describe(exc),
                state.next_action.sleep if state.next_action else 0.0,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_random_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception(_is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)

    def _call(self, op: str, key: str, fn: Callable[[], T], *, missing: T | None = None) -> T:
        """``fn`` with retries; minio's errors become ``StoreError`` naming ``op`` and ``key``.

        ``op`` is e.g. "put", "get", "stat"; a missing object returns ``missing``
        when given, else raises "not found".
        """
        where = {"put": "to", "get": "from"}.get(op, "in")
        attempts = [0]
        try:
            return self._retrying(f"{op} {key} {where} {self.uri}", fn, attempts)
        except StoreError:
            raise
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "NoSuchObject"):
                if missing is not None:
                    return missing
                raise StoreError(f"{key}: not found in {self.uri}") from exc
            raise self._error(op, f"{key} {where} {self.uri}", exc, attempts[0]) from exc

    def _error(self, op: str, subject: str, exc: BaseException, attempts: int) -> StoreError:
        code = _code(exc)
        if code == "NoSuchBucket":
            return StoreError(
                f"{op} {subject} failed: bucket '{self.bucket}' does not exist at "
                f"{self.endpoint} (set storage.createBucket: true to create it)"
            )
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            advice = "check the S3 credentials and the bucket's policy"
            if op == "put":
                # As a folder without write permission: no training's fault, and no retry
                # will help; a local run stops (resumable) instead of waiting or charging.
                return OutputUnwritable(subject, None, f"{self._describe(exc)} ({advice})")
            return StoreError(f"{op} {subject} failed: {self._describe(exc)} ({advice})")
        if _is_transient(exc):
            return StoreError(
                f"{op} {subject} failed after {attempts} attempts: {self._describe(exc)}"
            )
        return StoreError(f"{op} {subject} failed: {self._describe(exc)}")

    # -- bucket ---------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Check that the bucket exists; create it if ``create_bucket``, else explain."""
        attempts = [0]
        what = f"check bucket '{self.bucket}' at {self.endpoint}"
        try:
            exists = self._retrying(what, lambda: self._client.bucket_exists(self.bucket), attempts)
            if exists:
                return
            if not self.create_bucket:
                raise StoreError(
                    f"bucket '{self.bucket}' does not exist at {self.endpoint} "
                    "(set storage.createBucket: true to create it)"
                )
            self._retrying(f"create bucket '{self.bucket}'", self._make_bucket, attempts)
            log.info("created bucket %s at %s", self.bucket, self.endpoint)
        except StoreError:
            raise
        except Exception as exc:
            reason = self._transport_reason(exc)
            if reason is not None:
                raise StoreError(
                    f"cannot reach S3 endpoint {self.endpoint}: {reason} "
                    f"(after {attempts[0]} attempts)"
                ) from exc
            subject = f"bucket '{self.bucket}' at {self.endpoint}"
            raise self._error("check", subject, exc, attempts[0]) from exc

    def _make_bucket(self) -> None:
        try:
            self._client.make_bucket(self.bucket)
        except S3Error as exc:
            # Two starters may race to create it; either way it now exists.
            if exc.code == "BucketAlreadyOwnedByYou":
                return
            if exc.code == "BucketAlreadyExists" and self._client.bucket_exists(self.bucket):
                return
            raise

    # -- objects --------------------------------------------------------------

    def _put(self, name: str, data: bytes, conditions: dict[str, str]) -> str:
        # The public ``Minio.put_object`` cannot send If-Match / If-None-Match
        # (7.2.20 has no extra-headers argument, and its ``metadata`` turns unknown
        # headers into ``X-Amz-Meta-*``). ``Minio._put_object`` is the one-request
        # PutObject primitive that ``put_object`` itself calls for single-part
        # uploads: same region lookup, signing, payload hash and S3Error parsing,
        # our headers passed through verbatim, and the ETag returned unquoted.
        # It is the narrowest call that can carry the headers; ``_execute("PUT")``
        # would also work but is the generic request path (any method, we would
        # parse the ETag ourselves). Internal API: the signature is checked in
        # ``_check_minio`` and minio is pinned. A fresh header dict per attempt:
        # minio adds its signing headers to the dict it is given.
        headers: DictType = {"Content-Type": "application/octet-stream", **conditions}
        result = self._client._put_object(self.bucket, name, data, headers)
        return _strip_etag(result.etag) or ""

    def put_bytes(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        """Write ``data`` in one PUT; conditional when asked (see the module docstring).

        An attempt that timed out may still have been applied by the server; if
        a retry of a conditional write then gets 412, the object is read back and
        the write counts as ours when it holds exactly ``data``.
        """
        name = self._name(key)
        data = bytes(data)
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["If-None-Match"] = "*"
        if if_match is not None:
            conditions["If-Match"] = f'"{_strip_etag(if_match)}"'
        ambiguous = [False]
        point = key.rsplit("/", 1)[-1]

        def attempt() -> str:
            crashpoints.reached(f"s3-put:{point}")
            try:
                etag = self._put(name, data, conditions)
            except Exception as exc:
                if _is_transient(exc) and not _not_sent(exc):
                    ambiguous[0] = True
                raise
            crashpoints.reached(f"s3-put-done:{point}")
            return etag

        try:
            return self._call("put", key, attempt)
        except StoreError as err:
            exc = err.__cause__
            lost = _code(exc) == "PreconditionFailed" or _status(exc) == 412
            gone = if_match is not None and (_code(exc) or "") in ("NoSuchKey", "NoSuchObject")
            if not (conditions and (lost or gone)):
                raise
            if lost and ambiguous[0]:
                current = self._read_back(key)
                if current is not None and current[0] == data:
                    log.info("put %s to %s: an earlier timed-out attempt had landed", key, self.uri)
                    return current[1]
            if if_none_match:
                raise PreconditionFailed(
                    f"{key}: already exists in {self.uri} (another writer wrote it first)"
                ) from exc
            if gone:
                raise PreconditionFailed(
                    f"{key}: no longer exists in {self.uri} (another writer removed it); "
                    f"expected ETag {_strip_etag(if_match)}"
                ) from exc
            try:
                found = self.etag(key)
            except StoreError:
                found = "unknown (cannot read it now)"
            raise PreconditionFailed(
                f"{key}: changed in {self.uri} since it was read (another writer wrote it); "
                f"expected ETag {_strip_etag(if_match)}, found {found}"
            ) from exc

    def _read_back(self, key: str) -> tuple[bytes, str] | None:
        try:
            return self._get(key)
        except StoreError:
            return None

    def _get(self, key: str) -> tuple[bytes, str]:
        name = self._name(key)

        def attempt() -> tuple[bytes, str]:
            response = self._client.get_object(self.bucket, name)
            try:
                return response.read(), _strip_etag(response.headers.get("etag")) or ""
            finally:
                response.close()
                response.release_conn()

        return self._call("get", key, attempt)

    def get_bytes(self, key: str) -> bytes:
        return self._get(key)[0]

    def etag(self, key: str) -> str | None:
        name = self._name(key)

        def attempt() -> str:
            return _strip_etag(self._client.stat_object(self.bucket, name).etag) or ""

        return self._call("stat", key, attempt, missing="") or None

    def list(self, prefix: str) -> Iterator[str]:
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        wanted = f"{base}{prefix}/" if prefix else base

        def attempt() -> list[str]:
            return [
                str(obj.object_name)[len(base) :]
                for obj in self._client.list_objects(self.bucket, prefix=wanted, recursive=True)
                if not obj.is_dir
            ]

        return iter(sorted(self._call("list", prefix or "/", attempt)))

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._call("delete", key, lambda: self._client.remove_object(self.bucket, name))

    def put_file(self, key: str, path: Path, progress: Progress | None = None) -> str:
        """Stream a file up; files over 5 MiB go as a multipart upload (parts in parallel).

        A multipart upload's ETag is not the MD5 of the file (it ends in ``-<parts>``).
        """
        name = self._name(key)
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"put {key} to {self.uri} failed: {path} is not a file")
        adapter = _ProgressAdapter(progress) if progress else None

        def attempt() -> str:
            result = self._client.fput_object(self.bucket, name, str(path), progress=adapter)
            return _strip_etag(result.etag) or ""

        return self._call("put", key, attempt)

    def get_file(self, key: str, path: Path, progress: Progress | None = None) -> Path:
        """Stream an object down to ``path`` (written whole or not at all)."""
        name = self._name(key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> Path:
            response = self._client.get_object(self.bucket, name)

            def chunks() -> Iterator[bytes]:
                total = int(response.headers.get("content-length", 0))
                done = 0
                for chunk in response.stream(1024 * 1024):
                    yield chunk
                    done += len(chunk)
                    if progress:
                        progress(done, total)

            try:
                write_atomically(path, chunks())
            finally:
                response.close()
                response.release_conn()
            return path

        return self._call("get", key, attempt)


def _check_minio() -> None:
    params = tuple(inspect.signature(Minio._put_object).parameters)[1:]
    if params != _PUT_OBJECT_PARAMS:
        raise StoreError(
            f"hpo's S3 store needs minio 7.2.x (it sends conditional PUTs through "
            f"Minio._put_object{_PUT_OBJECT_PARAMS}); installed minio {minio.__version__} "
            f"has _put_object{params}"
        )


def env_credentials() -> tuple[str, str]:
    """Credentials from the environment (local runs; the operator reads a Secret instead).

    ``HPO_S3_ACCESS_KEY`` / ``HPO_S3_SECRET_KEY`` first, then
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``; a half-set pair is an error.
    """
    for access_var, secret_var in (
        ("HPO_S3_ACCESS_KEY", "HPO_S3_SECRET_KEY"),
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ):
        access, secret = os.environ.get(access_var), os.environ.get(secret_var)
        if access and secret:
            return access, secret
        if access or secret:
            missing = secret_var if access else access_var
            present = access_var if access else secret_var
            raise StoreError(f"S3 credentials: {present} is set but {missing} is not")
    raise StoreError(
        "S3 credentials missing: set HPO_S3_ACCESS_KEY and HPO_S3_SECRET_KEY "
        "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    )
