"""The operator's API client keeps a connection for each study thread: 50 studies calling
the API at once reuse their connections instead of opening and dropping one per call."""

from __future__ import annotations

import logging
import threading

import pytest
from kubernetes.config import kube_config

from hpo.kube.api import POOL_CONNECTIONS, Cluster
from hpo.kube.handlers import default_api_client
from support.kube.server import KubeServer

STUDIES = 50


def test_fifty_study_threads_calling_at_once_keep_their_connections(
    kube_server: KubeServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # $KUBECONFIG, as the client read it at import
    monkeypatch.setattr(
        kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kube_server.kubeconfig_path)
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    cluster = Cluster(default_api_client())  # as ``hpo operator`` makes it
    start = threading.Barrier(STUDIES)
    answers: list[int] = []

    def study(i: int) -> None:
        start.wait(60)
        for _ in range(5):
            answers.append(len(cluster.list_pods("default", f"study-{i}")))

    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    threads = [threading.Thread(target=study, args=(i,)) for i in range(STUDIES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    assert answers == [0] * STUDIES * 5
    assert STUDIES <= POOL_CONNECTIONS
    dropped = [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()]
    assert dropped == []
