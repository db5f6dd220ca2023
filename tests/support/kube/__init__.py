"""A Kubernetes API emulator, its server and a test kubelet: operator tests without a cluster.

- ``kube.emulator.KubeEmulator``: kmock's emulator made faithful enough for kopf,
  the ``kubernetes`` client and ``kubectl``.
- ``kube.server.KubeServer``: runs it on its own loop and thread, with a kubeconfig.
- ``kube.kubelet.TestKubelet``: plays pod lifecycles, optionally running the real
  container command as a subprocess.
- ``kube.fixtures``: pytest fixtures (a plugin: list it in ``pytest_plugins``).

It knows no product: CRDs are handed in (``KubeServer(crds=[...])``, or the
``kube_crds`` fixture).
"""
