"""Pytest fixtures for the emulated cluster.

A pytest plugin: ``tests/conftest.py`` lists ``"support.kube.fixtures"`` in ``pytest_plugins``.

- ``kube_crds`` (session): the CustomResourceDefinition dicts the cluster serves from
  the start; none here: a conftest overrides it (the product's CRD).
- ``kube_server`` (module): a running ``KubeServer``; objects persist across the
  module's tests, so give each test its own names or namespace.
- ``kube_api`` (function): ``KubeAPI`` (``client``, ``core``, ``custom``) on a new ApiClient.
- ``kubeconfig`` (function): the kubeconfig path, for kubectl or ``load_kube_config``.
- ``make_kubelet`` (function): ``make_kubelet(**TestKubelet options)`` → a started
  kubelet whose run pods' output feeds ``pods/log``; all are stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .kubelet import TestKubelet
from .server import KubeAPI, KubeServer


@pytest.fixture(scope="session")
def kube_crds() -> list[dict[str, Any]]:
    return []


@pytest.fixture(scope="module")
def kube_server(kube_crds: list[dict[str, Any]]) -> Iterator[KubeServer]:
    with KubeServer(crds=tuple(kube_crds)) as server:
        yield server


@pytest.fixture
def kube_api(kube_server: KubeServer) -> Iterator[KubeAPI]:
    api = kube_server.api()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def kubeconfig(kube_server: KubeServer) -> Path:
    return kube_server.kubeconfig_path


@pytest.fixture
def make_kubelet(kube_server: KubeServer) -> Iterator[Callable[..., TestKubelet]]:
    kubelets: list[tuple[TestKubelet, KubeAPI]] = []

    def make(**options: Any) -> TestKubelet:
        api = kube_server.api()
        options.setdefault(
            "on_output",
            lambda ns, name, text: kube_server.call(
                kube_server.emulator.pod_logs.__setitem__, (ns, name), text
            ),
        )
        kubelet = TestKubelet(api.client, **options).start()
        kubelets.append((kubelet, api))
        return kubelet

    yield make
    for kubelet, api in kubelets:
        kubelet.stop()
        api.close()
