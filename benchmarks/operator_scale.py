"""What the operator costs per training, and how that cost grows with the study's size.

Against the Kubernetes API emulator and a real S3 server (moto), with a test
kubelet that completes pods at once with synthetic scores, so only the
operator's own work is measured. The operator is a process of its own
(``hpo operator``, as deployed): its CPU time and memory are read from
``/proc/<pid>``, apart from the emulator's and the kubelet's (which keep every
object and request and so grow). One fresh operator per study size. Prints a
table; asserts nothing (targets: at most 4 API writes per training, median
rescheduling under 200 ms, cost per training flat from 100 to 5,000).

    .venv/bin/python benchmarks/operator_scale.py [--sizes 100 1000 5000] [--parallelism 10]

Columns: API requests of the operator (its own user agent and kopf's; writes =
create/patch/update/delete, reads = get/list, watches apart), rescheduling =
from a pod's success (its result written) to the creation of the next pod,
operator CPU seconds per training, its peak RSS (VmHWM), the ledger's writes
(timed by the operator itself, from its log), and growth = per-training cost
at N over the same at the smallest size.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import collections
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers.s3 import new_s3_store  # noqa: E402
from helpers.synthetic import synthetic  # noqa: E402
from hpo.kube.crd import crd  # noqa: E402
from hpo.study.spec import API_VERSION  # noqa: E402
from support.kube.kubelet import TestKubelet  # noqa: E402
from support.kube.server import KubeServer  # noqa: E402
from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server  # noqa: E402

NS = "default"
GROUP, VERSION, PLURAL = "hpo-operator.dev", "v1alpha1", "hpostudies"
#: User agents of the operator's requests: its own client and kopf's.
OPERATOR_AGENTS = ("hpo-operator", "kopf")
LEDGER_LINE = re.compile(r"ledger \S+: (\d+) rows written in ([0-9.]+)s")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def study_body(name: str, trainings: int, parallelism: int, s3: S3Server, bucket: str) -> dict:
    """A random-stage-only study of ``trainings`` configurations, one seed each."""
    return {
        "apiVersion": API_VERSION,
        "kind": "HPOStudy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            # The synthetic trainer never reads the dataset; the operator checks it once.
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


# -- the operator process ------------------------------------------------------------------


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB: now and the peak so far."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


@contextlib.contextmanager
def operator_process(kube: KubeServer, log: Path, poll_s: float) -> Iterator[subprocess.Popen]:
    """``hpo operator`` as deployed, but against the emulator; killed at the end."""
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig_path)}
    cmd = [sys.executable, "-m", "hpo.cli", "operator", "--liveness", "", "--metrics-port", "0"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*cmd, "--poll", str(poll_s)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            proc.kill()
            proc.wait(30)


def wait_idle(pid: int, log: Path, timeout: float = 60.0) -> None:
    """Until the operator has started its watches and stopped burning CPU on start-up."""
    deadline = time.monotonic() + timeout
    last = cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_s(pid)
        if now - last < 0.02 and log.exists() and log.stat().st_size > 0:
            return
        last = now
    raise RuntimeError(f"operator did not settle: {log.read_text()[-3000:]}")


# -- one study -----------------------------------------------------------------------------


@dataclass
class Sample:
    """The operator process at one moment of a study (``t`` seconds after its creation)."""

    t: float
    recorded: int
    rss_mb: float
    cpu_s: float


@dataclass
class Outcome:
    """What one study cost; ``requests`` counts the operator's by (verb, resource, sub)."""

    trainings: int
    wall_s: float
    phase: str
    cpu_s: float
    peak_rss_mb: float
    samples: list[Sample]
    requests: collections.Counter = field(default_factory=collections.Counter)
    gaps_s: list[float] = field(default_factory=list)
    ledger: list[tuple[int, float]] = field(default_factory=list)  # (rows, seconds) per write
    warnings: int = 0

    def count(self, verbs: tuple[str, ...]) -> int:
        return sum(n for (verb, *_), n in self.requests.items() if verb in verbs)


class Bench:
    """S3 server, API emulator and test kubelet, shared by every study of a run."""

    def __init__(self, s3: S3Server, kube: KubeServer) -> None:
        self.s3 = s3
        self.kube = kube
        self.api = kube.api()
        self.created: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self._answer: Callable[[dict[str, Any]], tuple[int, str]] = lambda pod: (1, "")
        self.api.core.create_namespaced_secret(
            NS,
            {
                "metadata": {"name": "s3-creds"},
                "data": {
                    "accessKey": base64.b64encode(TEST_ACCESS_KEY.encode()).decode(),
                    "secretKey": base64.b64encode(TEST_SECRET_KEY.encode()).decode(),
                },
            },
        )
        self.node = TestKubelet(
            kube.api_client(), behaviour=self._behaviour, result=self._result, max_running=64
        ).start()

    def _behaviour(self, pod: dict[str, Any]) -> str:
        self.created[pod["metadata"]["name"]] = time.perf_counter()
        return "instant"

    def _result(self, pod: dict[str, Any]) -> tuple[int, str]:
        out = self._answer(pod)  # one study at a time
        self.finished[pod["metadata"]["name"]] = time.perf_counter()
        return out

    def close(self) -> None:
        self.node.stop()
        self.api.close()

    def run(
        self,
        trainings: int,
        parallelism: int,
        *,
        poll_s: float = 1.0,
        sample_every_s: float = 0.2,
        on_sample: Callable[[Sample], None] | None = None,
        timeout_s: float = 7200.0,
    ) -> Outcome:
        """One study of ``trainings`` against a fresh operator process; waits for its end."""
        name = f"scale-{trainings}-{uuid.uuid4().hex[:6]}"
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        self._answer = synthetic(
            lambda: new_s3_store(self.s3, bucket=bucket, prefix="hpo/default", create_bucket=False)
        )
        self.created.clear()
        self.finished.clear()
        log = Path(tempfile.mkdtemp(prefix="hpo-bench-")) / "operator.log"
        emulator = self.kube.emulator
        samples: list[Sample] = []
        with operator_process(self.kube, log, poll_s) as proc:
            wait_idle(proc.pid, log)
            mark = len(emulator.request_log)
            cpu0 = cpu_s(proc.pid)
            start = time.perf_counter()
            self.api.custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                NS,
                PLURAL,
                study_body(name, trainings, parallelism, self.s3, bucket),
            )
            phase = ""
            while time.perf_counter() - start < timeout_s:
                if proc.poll() is not None:
                    raise RuntimeError(f"operator exited: {log.read_text()[-3000:]}")
                obj = self.api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
                status = obj.get("status") or {}
                counts = status.get("counts") or {}
                rss, _ = rss_mb(proc.pid)
                sample = Sample(
                    time.perf_counter() - start,
                    counts.get("succeeded", 0) + counts.get("failed", 0),
                    rss,
                    cpu_s(proc.pid) - cpu0,
                )
                samples.append(sample)
                if on_sample:
                    on_sample(sample)
                phase = status.get("phase", "")
                if phase in ("Succeeded", "Failed"):
                    break
                time.sleep(sample_every_s)
            wall = time.perf_counter() - start
            cpu = cpu_s(proc.pid) - cpu0
            _, peak = rss_mb(proc.pid)
        requests: collections.Counter = collections.Counter(
            (r.verb, r.resource, r.subresource)
            for r in emulator.request_log[mark:]
            if r.user_agent.startswith(OPERATOR_AGENTS)
        )
        text = log.read_text(errors="replace")
        ledger = [(int(m[1]), float(m[2])) for m in LEDGER_LINE.finditer(text)]
        return Outcome(
            trainings=trainings,
            wall_s=wall,
            phase=phase,
            cpu_s=cpu,
            peak_rss_mb=peak,
            samples=samples,
            requests=requests,
            gaps_s=rescheduling_gaps(self.finished, self.created),
            ledger=ledger,
            warnings=text.count("step failed"),
        )


def rescheduling_gaps(finished: dict[str, float], created: dict[str, float]) -> list[float]:
    """For each pod's success (but the last), the wait until the next pod was created."""
    starts = sorted(created.values())
    gaps = []
    for end in sorted(finished.values())[:-1]:
        i = bisect.bisect_right(starts, end)
        if i < len(starts):
            gaps.append(starts[i] - end)
    return sorted(gaps)


@contextlib.contextmanager
def bench() -> Iterator[Bench]:
    with S3Server() as s3, KubeServer(crds=(crd(),)) as kube:
        b = Bench(s3, kube)
        try:
            yield b
        finally:
            b.close()


# -- the table -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return values[int(q * (len(values) - 1))] if values else float("nan")


def steady_cpu_ms(o: Outcome) -> float:
    """CPU ms per training between 10% and 90% recorded: without start-up and final report."""
    n = o.trainings
    lo = next((s for s in o.samples if s.recorded >= 0.1 * n), None)
    hi = next((s for s in o.samples if s.recorded >= 0.9 * n), None)
    if lo is None or hi is None or hi.recorded <= lo.recorded:
        return float("nan")
    return 1000 * (hi.cpu_s - lo.cpu_s) / (hi.recorded - lo.recorded)


def row(o: Outcome) -> dict[str, float]:
    n = o.trainings
    ledger_s = sum(s for _, s in o.ledger)
    rows, last_s = o.ledger[-1] if o.ledger else (0, 0.0)
    return {
        "trainings": n,
        "wall_s": o.wall_s,
        "writes": o.count(("create", "patch", "update", "delete")) / n,
        "reads": o.count(("get", "list")) / n,
        "watches": o.count(("watch",)),
        "p50_ms": 1000 * statistics.median(o.gaps_s) if o.gaps_s else float("nan"),
        "p95_ms": 1000 * pct(o.gaps_s, 0.95),
        "cpu_ms": 1000 * o.cpu_s / n,
        "steady_ms": steady_cpu_ms(o),
        "peak_mb": o.peak_rss_mb,
        # Before the final report (plots load matplotlib): what holding the study costs.
        "end_mb": max((s.rss_mb for s in o.samples if s.recorded < n), default=float("nan")),
        "ledger_n": len(o.ledger),
        "ledger_s": ledger_s,
        "ledger_ms": 1000 * ledger_s / n,
        "last_write_s": last_s,
        "us_per_row": 1e6 * last_s / rows if rows else float("nan"),
    }


def print_table(outcomes: list[Outcome], parallelism: int) -> None:
    rows = [row(o) for o in outcomes]
    base = rows[0]
    print(
        f"\nparallelism {parallelism}; instant pods, synthetic scores; the operator in a "
        "process of its own\n"
    )
    header = (
        f"{'trainings':>9}{'wall s':>8}{'writes/tr':>10}{'reads/tr':>9}{'resched p50':>12}"
        f"{'p95 ms':>8}{'CPU ms/tr':>10}{'steady':>7}{'growth':>7}{'RSS MB':>8}{'peak':>5}"
        f"{'ledger':>7}{'ledger s':>9}{'ms/tr':>7}{'growth':>7}  {'last write':<18}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        last = f"{r['last_write_s']:.2f}s {r['us_per_row']:.0f}us/row"
        print(
            f"{r['trainings']:>9.0f}{r['wall_s']:>8.1f}{r['writes']:>10.2f}{r['reads']:>9.2f}"
            f"{r['p50_ms']:>9.0f} ms{r['p95_ms']:>8.0f}{r['cpu_ms']:>10.1f}{r['steady_ms']:>7.1f}"
            f"{r['steady_ms'] / base['steady_ms']:>7.2f}{r['end_mb']:>8.0f}{r['peak_mb']:>5.0f}"
            f"{r['ledger_n']:>7.0f}{r['ledger_s']:>9.2f}{r['ledger_ms']:>7.2f}"
            f"{r['ledger_ms'] / base['ledger_ms']:>7.2f}  {last}"
        )
    print(
        "\nwrites/reads: the operator's API requests per training (kopf's included; watches "
        "apart)\nresched: a pod's success to the next pod's creation\nCPU: the operator "
        "process's user+system time per training; steady: between 10% and 90%\n  recorded "
        "(no start-up, no final report); growth: steady CPU per training over the first size's"
        "\nRSS: the operator's largest sample before its final report; peak: VmHWM, all along"
        "\nledger: number of writes, their total time (timed in the operator), per training, "
        "growth of\n  that over the first size's, and the last (largest) write"
    )
    for o in outcomes:
        detail = ", ".join(
            f"{verb} {res}{'/' + sub if sub else ''} {n}"
            for (verb, res, sub), n in sorted(o.requests.items(), key=lambda kv: -kv[1])
        )
        print(f"\n{o.trainings}: phase {o.phase}, {o.warnings} failed steps; requests: {detail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--parallelism", type=int, default=10)
    ap.add_argument("--poll", type=float, default=1.0, help="the operator's --poll")
    args = ap.parse_args()
    # Stopped with SIGTERM: still stop the operator, the S3 server and the emulator.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    outcomes = []
    with bench() as b:
        for n in args.sizes:
            o = b.run(n, args.parallelism, poll_s=args.poll)
            print(f"{n} trainings: {o.phase} in {o.wall_s:.1f}s", flush=True)
            outcomes.append(o)
    print_table(outcomes, args.parallelism)


if __name__ == "__main__":
    main()
