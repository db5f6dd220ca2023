"""``KubeServer``: the emulator served over HTTP on its own event loop, in a background thread.

Sync code in the test thread (the ``kubernetes`` client, ``kubectl``, kopf's
``KopfRunner`` with its own loop) all talk to it over real HTTP. kmock's own
pytest fixture would put the server on the test's loop instead, where kopf then
waits 5 s at every shutdown for the open watch streams.

    with KubeServer() as kube:
        api = kube.api()                       # CoreV1Api + CustomObjectsApi
        kube.kubectl("get", "pods")            # a real kubectl on a generated kubeconfig
        kube.count("create", "pods")           # API calls per verb, from the request log
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import aiohttp.test_utils
import aiohttp.web_runner
import aiohttp.web_server
import attrs
import kmock
import yaml

from .emulator import ApiFaults, KubeEmulator, RequestRecord

if TYPE_CHECKING:
    import kopf
    from kubernetes import client as k8s_client

T = TypeVar("T")


class _QuickTestServer(aiohttp.test_utils.RawTestServer):
    """aiohttp's raw test server, but it waits at most 1 s for open requests at shutdown."""

    async def _make_runner(
        self, debug: bool = False, **kwargs: Any
    ) -> aiohttp.web_runner.ServerRunner:
        server = aiohttp.web_server.Server(self._handler, loop=self._loop, debug=debug, **kwargs)
        return aiohttp.web_runner.ServerRunner(server, shutdown_timeout=1.0)


@attrs.mutable
class _Server(kmock.Server):
    """kmock's Server without its process-wide aiohttp DNS interceptor.

    The interceptor patches ``aiohttp.TCPConnector`` for every thread and must be
    exited in LIFO order; servers in threads of their own cannot promise that, and
    kopf (in another thread) needs no interception to reach 127.0.0.1.
    """

    async def __aenter__(self) -> Self:
        self._managed_server = self._server_cls(self.handler, host=self._host, port=self._port)
        await self._managed_server.__aenter__()
        self._managed_client = self._client_fct(self._managed_server.make_url("/"))
        await self._managed_client.__aenter__()
        self.handler.servers.append(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.handler.servers.remove(self)
        if self._managed_client is not None:
            await self._managed_client.__aexit__(exc_type, exc_value, traceback)
        if self._managed_server is not None:
            await self._managed_server.__aexit__(exc_type, exc_value, traceback)
        self._managed_client = None
        self._managed_server = None


@dataclasses.dataclass
class KubeAPI:
    """The kubernetes client for one test: the ApiClient and the two APIs operators use."""

    client: k8s_client.ApiClient
    core: k8s_client.CoreV1Api
    custom: k8s_client.CustomObjectsApi

    def close(self) -> None:
        self.client.close()


class KubeServer:
    """Run a ``KubeEmulator`` + kmock ``Server`` on a loop of its own in a daemon thread."""

    def __init__(
        self,
        emulator: KubeEmulator | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        **options: Any,
    ) -> None:
        """``options`` go to ``KubeEmulator`` (e.g. ``namespaces=("default", "ns1")``);
        ``port``: a given one (an API server back where it was), else a free one."""
        self.emulator = emulator if emulator is not None else KubeEmulator(**options)
        self.host = host
        self.port = port
        self._url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._dir: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server thread; return once it listens and the kubeconfig is written."""
        if self._thread is not None:
            raise RuntimeError("KubeServer is started already")
        self._dir = Path(tempfile.mkdtemp(prefix="kube-server-"))
        self._thread = threading.Thread(target=self._run, name="kube-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("KubeServer did not start in time")
        if self._error is not None:
            raise RuntimeError("KubeServer failed to start") from self._error
        self._write_kubeconfig()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the watch streams, stop the server and its loop, remove the kubeconfig."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("KubeServer did not stop in time")
        self._thread = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> Literal[False]:
        self.stop()
        return False

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:
            self._error = e
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        async with (
            self.emulator,
            _Server(
                self.emulator, host=self.host, port=self.port, server_cls=_QuickTestServer
            ) as srv,
        ):
            self._url = str(srv.url).rstrip("/")
            self._ready.set()
            await self._stopping.wait()
            await self.emulator.close_watches()

    # -- access ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._url is None:
            raise RuntimeError("KubeServer is not started")
        return self._url

    @property
    def kubeconfig_path(self) -> Path:
        """A kubeconfig for kubectl and ``kubernetes.config`` (token ``x``, plain http)."""
        if self._dir is None:
            raise RuntimeError("KubeServer is not started")
        return self._dir / "kubeconfig.yaml"

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request so far (method, path, query, verb, status), oldest first."""
        return self.emulator.request_log

    def count(self, verb: str | None = None, resource: str | None = None) -> int:
        """Recorded requests by verb (get list watch create update patch delete ...) and plural."""
        return self.emulator.count_requests(verb, resource)

    def mark(self) -> int:
        """A position in the request log, for ``requests_since(mark)``."""
        return len(self.emulator.request_log)

    def requests_since(self, mark: int) -> list[RequestRecord]:
        return self.emulator.request_log[mark:]

    @contextlib.contextmanager
    def faulty(self, faults: ApiFaults | None) -> Iterator[ApiFaults | None]:
        """The server answers as ``faults`` say inside the block, rightly again after it."""
        self.emulator.faults = faults
        try:
            yield faults
        finally:
            self.emulator.faults = None

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the server loop (for direct emulator access)."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("KubeServer is not started")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as e:
                future.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A stored object (e.g. ``get_object("v1/pods", "default", "p")``), or None."""
        return self.call(self.emulator.get_object, resource, namespace, name)

    def list_objects(
        self, resource: str, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        return self.call(self.emulator.list_objects, resource, namespace, label_selector)

    def create_object(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create without HTTP (not counted in the request log)."""
        return self.call(self.emulator.create_object, resource, body)

    # -- clients --------------------------------------------------------------------------

    def api_client(self) -> k8s_client.ApiClient:
        """A new ``kubernetes.client.ApiClient`` for this server (the global config untouched)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig_path))

    def api(self) -> KubeAPI:
        """A ``KubeAPI`` bundle on a new ApiClient; ``close()`` it when done."""
        from kubernetes import client

        api_client = self.api_client()
        return KubeAPI(
            api_client, client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        )

    def connection_info(self) -> kopf.ConnectionInfo:
        """What a ``@kopf.on.login`` handler should return for this server."""
        import kopf

        return kopf.ConnectionInfo(
            server=self.url, scheme="Bearer", token="x", default_namespace="default"
        )

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl --kubeconfig K --cache-dir C ARGS``; raise with stderr if it fails and ``check``."""
        assert self._dir is not None
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        argv = [
            "kubectl",
            "--kubeconfig",
            str(self.kubeconfig_path),
            "--cache-dir",
            str(self._dir / "cache"),
            *args,
        ]
        done = subprocess.run(
            argv, capture_output=True, text=True, input=input, timeout=timeout, env=env
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}{done.stdout}"
            )
        return done

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "x"}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": "default"},
                }
            ],
            "current-context": "emulator",
            "preferences": {},
        }
        self.kubeconfig_path.write_text(yaml.safe_dump(config, sort_keys=False))
