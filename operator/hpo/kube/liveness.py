"""The operator's liveness: red once the API server has not answered for a while.

kopf's ``/healthz`` answers 200 as long as the process runs, also when the operator
cannot log in to the API server or reach it at all, so a pod with broken credentials
or a cut network would never be restarted. ``ApiContact`` asks the API server, in a
thread of its own, every ``window_s / 4`` seconds for what the operator's watch needs
(a list of HPOStudies, authenticated, under its RBAC); ``check()``, called by kopf's
probe on every ``/healthz``, fails once the last answer is older than ``window_s``.
The probe itself never waits on the API server (the kubelet's probe has a timeout of
its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from hpo.kube.crd import PLURAL, VERSION
from hpo.study.spec import API_GROUP

#: Default window: the API server unanswered this long turns ``/healthz`` red.
DEFAULT_WINDOW_S = 60.0


class ApiUnreachable(RuntimeError):
    """The API server has not answered within the window."""


class ApiContact:
    """When the API server last answered; ``ping`` raises when it did not."""

    def __init__(
        self,
        ping: Callable[[], object],
        *,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"liveness window {window_s}: must be more than 0 seconds")
        self.ping = ping
        self.window_s = window_s
        self.clock = clock
        # Counted from the start: an operator that never reaches the API turns red too.
        self.last_answer = clock()
        self.answered = False
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_once(self) -> bool:
        """Ask the API server once; remember when it answered, or why not."""
        try:
            self.ping()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return False
        self.last_answer = self.clock()
        self.answered = True
        self.last_error = ""
        return True

    def check(self) -> dict[str, Any]:
        """What ``/healthz`` shows; raises ``ApiUnreachable`` past the window."""
        age = self.clock() - self.last_answer
        if age > self.window_s:
            since = "answered" if self.answered else "been reached since the start"
            raise ApiUnreachable(
                f"the API server has not {since} for {age:.0f} s (window {self.window_s:g} s)"
                + (f": {self.last_error}" if self.last_error else "")
            )
        return {"lastAnswerSecondsAgo": round(age, 1), "windowSeconds": self.window_s}

    def start(self) -> ApiContact:
        self._thread = threading.Thread(target=self._run, name="api-contact", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        every = max(0.2, self.window_s / 4)
        while not self._stop.is_set():
            self.try_once()
            self._stop.wait(every)


def study_list_ping(
    api_client: Callable[[], client.ApiClient], namespaces: list[str], timeout_s: float
) -> Callable[[], object]:
    """A list of at most one HPOStudy where the operator watches (its first namespace, or
    the whole cluster): needs the API server, valid credentials and the operator's RBAC.
    The client is made at the first ping (a missing configuration is a failed ping)."""
    box: list[client.CustomObjectsApi] = []

    def ping() -> object:
        if not box:
            box.append(client.CustomObjectsApi(api_client()))
        custom = box[0]
        if namespaces:
            return custom.list_namespaced_custom_object(
                API_GROUP, VERSION, namespaces[0], PLURAL, limit=1, _request_timeout=timeout_s
            )
        return custom.list_cluster_custom_object(
            API_GROUP, VERSION, PLURAL, limit=1, _request_timeout=timeout_s
        )

    return ping
