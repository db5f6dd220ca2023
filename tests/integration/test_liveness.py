"""The operator's liveness endpoint against the emulated API server: green while the API
server answers, red once it has not for the window (``--liveness-window``), green again
when it is back. kopf's own /healthz would stay green throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support.kube.server import KubeServer
from support.net import free_port, http_answer

WINDOW_S = 2


def _until(url: str, status: int, log: Path, timeout: float = 300) -> str:
    """The body of the first answer with ``status``. A generous bound, not a timing
    check: kopf caches a probe's answer for 10 s, the window adds 2 s; a loaded machine
    (other work on every core) takes many times that."""
    deadline = time.monotonic() + timeout
    seen = (0, "")
    while time.monotonic() < deadline:
        seen = http_answer(url)
        if seen[0] == status:
            return seen[1]
        time.sleep(0.5)
    raise AssertionError(f"no {status} from {url}; last {seen}\n{log.read_text()[-3000:]}")


def _logged(log: Path, text: str, timeout: float = 300) -> None:
    """``text`` appears in the operator's log within ``timeout`` (a bound, not a timing
    check); else the log's end says why the probe was red."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the operator's log:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def test_liveness_turns_red_without_the_api_server_and_green_again(
    hpo_crd: dict[str, Any], tmp_path: Path
) -> None:
    kube = KubeServer(crds=(hpo_crd,)).start()
    port = int(kube.url.rsplit(":", 1)[1])
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(kube.kubeconfig_path.read_text())  # outlives the first server
    url = f"http://127.0.0.1:{free_port()}/healthz"
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    command = [sys.executable, "-m", "hpo.cli", "operator", "--liveness", url]
    command += ["--liveness-window", str(WINDOW_S), "--metrics-port", "0", "--poll", "0.3"]
    back = None
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        green = json.loads(_until(url, 200, log))
        assert green["apiServer"]["windowSeconds"] == WINDOW_S
        assert green["apiServer"]["lastAnswerSecondsAgo"] <= WINDOW_S

        kube.stop()  # the API server is gone
        _until(url, 500, log)
        assert proc.poll() is None  # red, not dead: the kubelet restarts it
        # kopf logs the probe's error beside the answer, not necessarily before it.
        _logged(log, "the API server has not answered for")

        back = KubeServer(crds=(hpo_crd,), port=port).start()
        green = json.loads(_until(url, 200, log))
        assert green["apiServer"]["lastAnswerSecondsAgo"] <= WINDOW_S
    finally:
        proc.terminate()
        proc.wait(30)
        kube.stop()
        if back is not None:
            back.stop()
