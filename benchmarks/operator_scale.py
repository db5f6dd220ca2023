"""What the operator costs per training: API requests, rescheduling latency, memory, ledger.

Against the Kubernetes API emulator and a real S3 server (moto), with a test
kubelet that completes pods at once with synthetic scores, so only the
operator's own work is measured. Prints a table; asserts nothing.

    .venv/bin/python benchmarks/operator_scale.py [--sizes 100 400] [--parallelism 10]
"""

from __future__ import annotations

import argparse
import base64
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import kopf
from kopf.testing import KopfRunner

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from kube.kubelet import TestKubelet  # noqa: E402
from kube.server import KubeServer  # noqa: E402
from kube.synthetic import synthetic  # noqa: E402
from s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server, new_s3_store  # noqa: E402

from hpo.handlers import make_registry  # noqa: E402
from hpo.spec import API_VERSION  # noqa: E402

NS = "default"


def study(name: str, trainings: int, parallelism: int, s3: S3Server, bucket: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "HPOStudy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "dataset": {
                "path": str(REPO / "examples" / "data" / "transistor.csv"),
                "labels": ["Id_mA", "gm_mS", "gds_uS"],
            },
            "searchSpace": {
                "hiddenLayers": {"min": 1, "max": 4},
                "neurons": {"min": 8, "max": 512, "step": 8},
            },
            "training": {"seedsPerConfig": 1},
            "randomStage": {"configurations": trainings},
            "bayesianStage": {"enabled": False},
            "parallelism": parallelism,
            "storage": {
                "type": "s3",
                "endpoint": s3.endpoint,
                "tls": False,
                "bucket": bucket,
                "createBucket": True,
                "credentialsSecret": {"name": "s3-creds"},
            },
            "trainer": {"image": "bench/trainer"},
        },
    }


def _operator_write(r: Any) -> bool:
    if r.verb not in ("create", "patch", "update", "delete"):
        return False
    if r.resource == "pods" and r.subresource == "status":
        return False  # the kubelet's
    return not (r.resource == "hpostudies" and r.verb == "create")  # the user's


def run(kube: KubeServer, s3: S3Server, trainings: int, parallelism: int) -> dict[str, float]:
    name = f"scale-{trainings}-{uuid.uuid4().hex[:6]}"
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    # The local dataset path is fine here: the synthetic trainer never reads it.
    emulator = kube.emulator
    created: dict[str, float] = {}
    finished: dict[str, float] = {}

    def behaviour(pod: dict[str, Any]) -> str:
        created[pod["metadata"]["name"]] = time.perf_counter()
        return "instant"

    answer = synthetic(
        lambda: new_s3_store(s3, bucket=bucket, prefix="hpo/default", create_bucket=False)
    )

    def result(pod: dict[str, Any]) -> tuple[int, str]:
        out = answer(pod)
        finished[pod["metadata"]["name"]] = time.perf_counter()
        return out

    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kube.connection_info()

    make_registry(kube.api_client, poll_s=1.0, registry=registry)
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.posting.enabled = False
    node = TestKubelet(kube.api_client(), behaviour=behaviour, result=result, max_running=64)
    node.start()
    mark = len(emulator.request_log)
    api = kube.api()
    start = time.perf_counter()
    with KopfRunner(
        ["run", "--standalone", "--all-namespaces"], registry=registry, settings=settings
    ):
        api.custom.create_namespaced_custom_object(
            "hpo-operator.dev",
            "v1alpha1",
            NS,
            "hpostudies",
            study(name, trainings, parallelism, s3, bucket),
        )
        while True:
            obj = api.custom.get_namespaced_custom_object(
                "hpo-operator.dev", "v1alpha1", NS, "hpostudies", name
            )
            if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(0.2)
    wall = time.perf_counter() - start
    node.stop()
    log = emulator.request_log[mark:]
    operator_writes = [r for r in log if _operator_write(r)]
    reads = [r for r in log if r.verb in ("get", "list")]
    # Rescheduling: from a pod's end to the creation of the next pod.
    ends = sorted(finished.values())
    starts = sorted(created.values())
    gaps = []
    for end in ends[:-1]:
        later = [s for s in starts if s > end]
        if later:
            gaps.append(later[0] - end)
    gaps.sort()
    return {
        "trainings": trainings,
        "wall_s": wall,
        "writes_per_training": len(operator_writes) / trainings,
        "reads_per_training": len(reads) / trainings,
        "resched_median_ms": 1000 * statistics.median(gaps) if gaps else float("nan"),
        "resched_p95_ms": 1000 * gaps[int(0.95 * (len(gaps) - 1))] if gaps else float("nan"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--parallelism", type=int, default=10)
    args = ap.parse_args()
    rows = []
    with S3Server() as s3, KubeServer() as kube:
        kube.api().core.create_namespaced_secret(
            NS,
            {
                "metadata": {"name": "s3-creds"},
                "data": {
                    "accessKey": base64.b64encode(TEST_ACCESS_KEY.encode()).decode(),
                    "secretKey": base64.b64encode(TEST_SECRET_KEY.encode()).decode(),
                },
            },
        )
        for n in args.sizes:
            rows.append(run(kube, s3, n, args.parallelism))
    print(f"parallelism {args.parallelism}; instant pods with synthetic scores; one process\n")
    header = (
        f"{'trainings':>10}{'wall s':>9}{'writes/tr':>11}{'reads/tr':>10}"
        f"{'resched p50 ms':>16}{'p95 ms':>9}{'peak RSS MB':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['trainings']:>10.0f}{r['wall_s']:>9.1f}{r['writes_per_training']:>11.2f}"
            f"{r['reads_per_training']:>10.2f}{r['resched_median_ms']:>16.0f}"
            f"{r['resched_p95_ms']:>9.0f}{r['peak_rss_mb']:>13.0f}"
        )
    print(
        "\nwrites: pod create/patch/delete, study status patches, events (the kubelet's excluded)"
    )


if __name__ == "__main__":
    main()
