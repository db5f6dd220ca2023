"""Test infrastructure that knows nothing of the product (no ``hpo`` import here).

- ``support.kube``: a Kubernetes API emulator (kmock), its HTTP server on a thread
  of its own, a test kubelet and pytest fixtures; CRDs are handed in by the caller.
- ``support.s3server``: a real S3 server (moto in ``.venv-s3``) as a subprocess.
- ``support.s3fixtures``: the ``s3_server`` fixture (a pytest plugin).
- ``support.faultproxy``: an HTTP proxy that delays, drops or fails requests.

Product-specific helpers (study dicts, the synthetic trainer, S3 stores) live in
``tests/helpers``; fixtures in the ``conftest.py`` files.
"""
