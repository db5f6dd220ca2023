"""What one operator costs when it runs many studies at once, in several namespaces.

``operator_scale.py`` measures one study; here ``--studies`` studies, spread over
``--namespaces`` namespaces, share ``--trainings`` trainings and one ``hpo operator``
process (as deployed, against the API emulator and a real S3 server), all created at
once. The test kubelet completes pods at once with synthetic scores, so only the
operator's own work is measured. Prints a table and checks, for every study, that its
ledger holds every training exactly once (none missing, none twice) and that its status
says Succeeded; exits 1 if one does not.

    .venv/bin/python benchmarks/operator_many.py [--studies 50] [--namespaces 5]
        [--trainings 20000] [--parallelism 10] [--json benchmarks/results/operator_many.json]

A small version (``--studies 6 --namespaces 2 --trainings 300``) takes about a minute.

The busy-cluster variant: ``--capacity 10`` lets the test kubelet bind at most 10 pods
cluster-wide (the others wait ``Unschedulable``), and ``--preempt 0.05`` preempts that
share of pods while they run (the ``DisruptionTarget`` condition, reason
``PreemptionByScheduler``, then the pod deleted, as the scheduler does). A preempted
training is started again and still recorded once; its pod's end counts as a completion
for rescheduling.

Columns: the operator's API writes (create/patch/update/delete, by its user agents)
per training; rescheduling = from a pod's completion to the creation of the next pod
of the same study (p50/p95 over all studies); the operator process's CPU time per
training (all of it, and between 10% and 90% of the trainings recorded); its peak RSS
(VmHWM) and its largest RSS before the first study finished.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import collections
import contextlib
import json
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from kubernetes import watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from operator_scale import (  # noqa: E402  (benchmarks/ is no package)
    GROUP,
    LEDGER_LINE,
    OPERATOR_AGENTS,
    PLURAL,
    VERSION,
    cpu_s,
    operator_process,
    pct,
    rss_mb,
    study_body,
    wait_idle,
)

from helpers.s3 import new_s3_store  # noqa: E402
from helpers.synthetic import synthetic  # noqa: E402
from hpo.kube.crd import crd  # noqa: E402
from hpo.kube.pods import LABEL_STUDY  # noqa: E402
from hpo.records.ledger.io import read_ledger  # noqa: E402
from hpo.store import Store  # noqa: E402
from hpo.study.layout import StudyPaths  # noqa: E402
from support.kube.kubelet import TestKubelet  # noqa: E402
from support.kube.server import KubeServer  # noqa: E402
from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server  # noqa: E402

WRITES = ("create", "patch", "update", "delete")
SAMPLE_S = 0.5  # the operator's CPU and RSS, the studies' counts: sampled this often
StudyKey = tuple[str, str]  # (namespace, name)


@dataclass
class Plan:
    """How many studies, where, and how many trainings each."""

    studies: int
    namespaces: int
    trainings: int
    parallelism: int
    capacity: int | None = None  # pods bound at once, cluster-wide (None: no limit)
    preempt: float = 0.0  # share of pods preempted while they run

    def layout(self, run: str) -> list[tuple[str, str, int]]:
        """(namespace, study name, trainings) per study: round-robin over the namespaces,
        the trainings shared out as evenly as they go."""
        each, extra = divmod(self.trainings, self.studies)
        return [
            (f"team-{i % self.namespaces}", f"many-{run}-{i:02d}", each + (i < extra))
            for i in range(self.studies)
        ]


@dataclass
class Sample:
    """The studies and the operator process at one moment (``t`` s after the creation)."""

    t: float
    recorded: int
    cpu_s: float
    rss_mb: float
    queued: int  # trainings whose pods wait for capacity (counts.queued), all studies


@dataclass
class StudyCheck:
    """One study at the end: what its status and its ledger say."""

    namespace: str
    name: str
    expected: int
    phase: str
    ledger_rows: int
    distinct: int
    succeeded: int
    failed: int
    pods: int

    @property
    def ok(self) -> bool:
        return (
            self.phase == "Succeeded"
            and self.ledger_rows == self.distinct == self.succeeded == self.expected
        )


@dataclass
class Result:
    """A run's figures (what ``--json`` writes)."""

    studies: int
    namespaces: int
    trainings: int
    parallelism: int
    wall_s: float
    cpu_ms_per_training: float
    steady_cpu_ms_per_training: float
    writes_per_training: float
    reads_per_training: float
    watches: int
    resched_p50_ms: float
    resched_p95_ms: float
    resched_n: int
    peak_rss_mb: float
    running_rss_mb: float
    capacity: int | None
    preempt: float
    preempted: int
    requeued: int  # trainings the operator ran again after a disruption (its events)
    failed_trainings: int  # ledger rows that are not "succeeded", all studies
    most_queued: int
    pods_per_training: float
    ledger_writes: int
    ledger_s: float
    failed_steps: int
    all_recorded_once: bool
    requests: dict[str, int] = field(default_factory=dict)
    bad_studies: list[dict[str, Any]] = field(default_factory=list)


class Node:
    """The test kubelet, answering each pod with its study's synthetic scores, and the
    times it saw each study's pods created and completed."""

    def __init__(self, kube: KubeServer, s3: S3Server, bucket: str, plan: Plan) -> None:
        self.created: dict[StudyKey, list[float]] = collections.defaultdict(list)
        self.finished: dict[StudyKey, list[float]] = collections.defaultdict(list)
        self.preempted = 0
        self._victims: list[tuple[str, StudyKey]] = []  # pod uids, to preempt once running
        self.errors: list[str] = []
        self._preempt = plan.preempt
        self._random = random.Random(26)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._answers: dict[str, Callable[[dict[str, Any]], tuple[int, str]]] = {}
        self._s3, self._bucket = s3, bucket
        self.kubelet = TestKubelet(
            kube.api_client(),
            behaviour=self._behaviour,
            result=self._result,
            max_running=64,
            capacity=plan.capacity,
        ).start()
        self._preempter = threading.Thread(target=self._preempt_running, daemon=True)
        if plan.preempt:
            self._preempter.start()

    @staticmethod
    def _key(pod: dict[str, Any]) -> StudyKey:
        meta = pod["metadata"]
        return meta["namespace"], (meta.get("labels") or {}).get(LABEL_STUDY, "")

    def _behaviour(self, pod: dict[str, Any]) -> str:
        """Instant, but a ``preempt`` share is held running until preempted."""
        now = time.perf_counter()
        key = self._key(pod)
        with self._lock:
            self.created[key].append(now)
            if self._preempt and self._random.random() < self._preempt:
                meta = pod["metadata"]
                self._victims.append((meta["uid"], key))
                return "hold"
        return "instant"

    def _preempt_running(self) -> None:
        """Preempt each victim as soon as the kubelet has it running (bound, started).

        Victims are kept by uid: a disrupted training's next pod has the same name."""
        while not self._stop.wait(0.02):
            with self._lock:
                victims, self._victims = self._victims, []
            waiting = []
            for uid, key in victims:
                record = self.kubelet.records.get(uid)
                if record is not None and (record.deleted or record.done.is_set()):
                    continue  # gone another way (the operator deleted it)
                if record is None or record.phase != "Running":
                    waiting.append((uid, key))
                    continue
                try:
                    self.kubelet.disrupt(
                        record.name, record.namespace, reason="PreemptionByScheduler"
                    )
                except ApiException as exc:  # deleted meanwhile: nothing left to preempt
                    self.errors.append(f"preempting {record.name}: {exc.status}")
                    continue
                now = time.perf_counter()
                with self._lock:
                    self.finished[key].append(now)
                    self.preempted += 1
            with self._lock:
                self._victims.extend(waiting)

    def _answer(self, namespace: str) -> Callable[[dict[str, Any]], tuple[int, str]]:
        with self._lock:
            if namespace not in self._answers:
                self._answers[namespace] = synthetic(lambda: self.store(namespace))
            return self._answers[namespace]

    def store(self, namespace: str) -> Store:
        """The namespace's part of the bucket, where its studies keep their results."""
        return new_s3_store(
            self._s3, bucket=self._bucket, prefix=f"hpo/{namespace}", create_bucket=False
        )

    def _result(self, pod: dict[str, Any]) -> tuple[int, str]:
        out = self._answer(pod["metadata"]["namespace"])(pod)
        now = time.perf_counter()
        with self._lock:
            self.finished[self._key(pod)].append(now)
        return out

    def gaps(self) -> list[float]:
        """Per study, for each pod's completion, the wait until the study's next pod."""
        gaps: list[float] = []
        with self._lock:
            studies = [(sorted(self.created[k]), sorted(v)) for k, v in self.finished.items()]
        for starts, ends in studies:
            for end in ends:
                i = bisect.bisect_right(starts, end)
                if i < len(starts):
                    gaps.append(starts[i] - end)
        return sorted(gaps)

    def stop(self) -> None:
        self._stop.set()
        if self._preempter.is_alive():
            self._preempter.join(10)
        self.kubelet.stop()


def add_secret(kube: KubeServer, namespace: str) -> None:
    api = kube.api()
    try:
        api.core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "s3-creds"},
                "data": {
                    "accessKey": base64.b64encode(TEST_ACCESS_KEY.encode()).decode(),
                    "secretKey": base64.b64encode(TEST_SECRET_KEY.encode()).decode(),
                },
            },
        )
    finally:
        api.close()


def check_study(store: Store, namespace: str, name: str, expected: int, phase: str, pods: int):
    """What the study's ledger holds: rows, distinct (trial, seed), succeeded ones."""
    rows = read_ledger(store, StudyPaths(name).ledger)
    return StudyCheck(
        namespace=namespace,
        name=name,
        expected=expected,
        phase=phase,
        ledger_rows=len(rows),
        distinct=len({(r.trial, r.seed) for r in rows}),
        succeeded=sum(r.status == "succeeded" for r in rows),
        failed=sum(r.status != "succeeded" for r in rows),
        pods=pods,
    )


def watch_studies(
    kube: KubeServer,
    pid: int,
    total: int,
    timeout_s: float,
    progress: Callable[[int, float], None],
) -> tuple[dict[StudyKey, str], list[Sample]]:
    """Follow every study (a watch: each status write wakes it) until all have ended;
    (phases, samples: at most one each ``SAMPLE_S``, and at every change)."""
    api = kube.api()
    samples: list[Sample] = []
    statuses: dict[StudyKey, dict[str, Any]] = {}
    start = time.perf_counter()
    last_print = 0.0
    version: str | None = None
    try:
        while True:
            if version is None:  # (re)list, then watch from there
                listing = api.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
                version = listing["metadata"]["resourceVersion"]
                for obj in listing["items"]:
                    meta = obj["metadata"]
                    statuses[(meta["namespace"], meta["name"])] = obj.get("status") or {}
            events = watch.Watch().stream(
                api.custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                resource_version=version,
                timeout_seconds=max(1, round(SAMPLE_S)),
            )
            for event in events if samples else ():
                obj = event["object"]
                if event["type"] == "ERROR":
                    version = None
                    break
                meta = obj["metadata"]
                version = meta.get("resourceVersion") or version
                statuses[(meta["namespace"], meta["name"])] = obj.get("status") or {}
                if samples and time.perf_counter() - start - samples[-1].t < SAMPLE_S:
                    continue
                break  # a sample is due: take it, then watch on from ``version``
            phases = {k: s.get("phase", "") for k, s in statuses.items()}
            counts = [s.get("counts") or {} for s in statuses.values()]
            recorded = sum(c.get("succeeded", 0) + c.get("failed", 0) for c in counts)
            queued = sum(c.get("queued", 0) for c in counts)
            now = time.perf_counter() - start
            samples.append(Sample(now, recorded, cpu_s(pid), rss_mb(pid)[0], queued))
            if now - last_print > 10:
                progress(recorded, now)
                last_print = now
            if phases and all(p in ("Succeeded", "Failed") for p in phases.values()):
                return phases, samples
            if now > timeout_s:
                raise TimeoutError(f"studies not done after {timeout_s:.0f}s: {phases}")
    finally:
        api.close()


def steady_cpu_ms(samples: list[Sample], total: int) -> float:
    """CPU ms per training between 10% and 90% recorded (no start-up, no final reports)."""
    lo = next((s for s in samples if s.recorded >= 0.1 * total), None)
    hi = next((s for s in samples if s.recorded >= 0.9 * total), None)
    if lo is None or hi is None or hi.recorded <= lo.recorded:
        return float("nan")
    return 1000 * (hi.cpu_s - lo.cpu_s) / (hi.recorded - lo.recorded)


@contextlib.contextmanager
def servers(plan: Plan) -> Iterator[tuple[S3Server, KubeServer]]:
    namespaces = tuple(f"team-{j}" for j in range(plan.namespaces))
    # The emulator keeps no kmock request objects: 20,000 trainings make millions.
    with (
        S3Server() as s3,
        KubeServer(crds=(crd(),), namespaces=("default", *namespaces), keep_requests=False) as kube,
    ):
        yield s3, kube


def run(plan: Plan, *, poll_s: float = 1.0, timeout_s: float = 7200.0, quiet: bool = False):
    """Every study of ``plan`` against one fresh operator; the figures and the checks."""
    say = (lambda *_: None) if quiet else (lambda text: print(text, flush=True))
    run_id = uuid.uuid4().hex[:4]
    bucket = f"many-{uuid.uuid4().hex[:10]}"
    layout = plan.layout(run_id)
    total = sum(n for *_, n in layout)
    with servers(plan) as (s3, kube):
        new_s3_store(s3, bucket=bucket, prefix="hpo")  # the bucket, made once
        for namespace in {ns for ns, *_ in layout}:
            add_secret(kube, namespace)
        node = Node(kube, s3, bucket, plan)
        log = Path(tempfile.mkdtemp(prefix="hpo-many-")) / "operator.log"
        emulator = kube.emulator
        api = kube.api()
        try:
            with operator_process(kube, log, poll_s) as proc:
                wait_idle(proc.pid, log)
                mark = len(emulator.request_log)
                cpu0 = cpu_s(proc.pid)
                start = time.perf_counter()
                for namespace, name, n in layout:
                    body = study_body(name, n, plan.parallelism, s3, bucket)
                    body["metadata"]["namespace"] = namespace
                    body["spec"]["storage"]["createBucket"] = False
                    api.custom.create_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, body
                    )
                phases, samples = watch_studies(
                    kube,
                    proc.pid,
                    total,
                    timeout_s,
                    lambda done, t: say(f"  {t:6.0f}s  {done}/{total} recorded"),
                )
                wall = time.perf_counter() - start
                cpu = cpu_s(proc.pid) - cpu0
                _, peak = rss_mb(proc.pid)
                if proc.poll() is not None:
                    raise RuntimeError(f"operator exited: {log.read_text()[-3000:]}")
        finally:
            api.close()
            node.stop()
        requests = collections.Counter(
            (r.verb, r.resource, r.subresource)
            for r in emulator.request_log[mark:]
            if r.user_agent.startswith(OPERATOR_AGENTS)
        )
        checks = []
        stores = {ns: node.store(ns) for ns, *_ in layout}
        for namespace, name, n in layout:
            pods = len(node.created[(namespace, name)])
            phase = phases.get((namespace, name), "")
            checks.append(check_study(stores[namespace], namespace, name, n, phase, pods))
    text = log.read_text(errors="replace")
    ledger = [(int(m[1]), float(m[2])) for m in LEDGER_LINE.finditer(text)]
    gaps = node.gaps()
    first_end = next((s for s in samples if s.recorded >= total), samples[-1])
    running_rss = max((s.rss_mb for s in samples if s.t <= first_end.t), default=float("nan"))

    def count(verbs: tuple[str, ...]) -> int:
        return sum(n for (verb, *_), n in requests.items() if verb in verbs)

    return Result(
        studies=plan.studies,
        namespaces=plan.namespaces,
        trainings=total,
        parallelism=plan.parallelism,
        wall_s=wall,
        cpu_ms_per_training=1000 * cpu / total,
        steady_cpu_ms_per_training=steady_cpu_ms(samples, total),
        writes_per_training=count(WRITES) / total,
        reads_per_training=count(("get", "list")) / total,
        watches=count(("watch",)),
        resched_p50_ms=1000 * statistics.median(gaps) if gaps else float("nan"),
        resched_p95_ms=1000 * pct(gaps, 0.95),
        resched_n=len(gaps),
        peak_rss_mb=peak,
        running_rss_mb=running_rss,
        capacity=plan.capacity,
        preempt=plan.preempt,
        preempted=node.preempted,
        requeued=text.count("TrainingDisrupted: "),
        failed_trainings=sum(c.failed for c in checks),
        most_queued=max(s.queued for s in samples),
        pods_per_training=sum(c.pods for c in checks) / total,
        ledger_writes=len(ledger),
        ledger_s=sum(s for _, s in ledger),
        failed_steps=text.count("step failed"),
        all_recorded_once=all(c.ok for c in checks),
        requests={
            f"{verb} {res}{'/' + sub if sub else ''}": n
            for (verb, res, sub), n in sorted(requests.items(), key=lambda kv: -kv[1])
        },
        bad_studies=[asdict(c) for c in checks if not c.ok],
    )


def print_result(r: Result) -> None:
    busy = (
        f"; room for {r.capacity} pods, {100 * r.preempt:g}% preempted"
        if r.capacity or r.preempt
        else ""
    )
    print(
        f"\n{r.studies} studies in {r.namespaces} namespaces, {r.trainings} trainings, "
        f"parallelism {r.parallelism} each; instant pods, synthetic scores{busy}\n"
    )
    rows = [
        ("wall", f"{r.wall_s:.1f} s"),
        ("operator CPU per training", f"{r.cpu_ms_per_training:.1f} ms"),
        ("  between 10% and 90% recorded", f"{r.steady_cpu_ms_per_training:.1f} ms"),
        ("API writes per training", f"{r.writes_per_training:.2f}"),
        ("API reads per training", f"{r.reads_per_training:.2f}"),
        ("rescheduling p50 / p95", f"{r.resched_p50_ms:.0f} / {r.resched_p95_ms:.0f} ms"),
        ("peak RSS (VmHWM)", f"{r.peak_rss_mb:.0f} MB"),
        ("RSS until the first study ended", f"{r.running_rss_mb:.0f} MB"),
        ("pods per training", f"{r.pods_per_training:.3f} ({r.preempted} preempted)"),
        ("trainings requeued, failed", f"{r.requeued}, {r.failed_trainings}"),
        ("most trainings queued at once", f"{r.most_queued}"),
        ("ledger writes, total time", f"{r.ledger_writes}, {r.ledger_s:.1f} s"),
        ("failed steps (operator log)", f"{r.failed_steps}"),
        ("every training recorded once", "yes" if r.all_recorded_once else "NO"),
    ]
    for label, value in rows:
        print(f"{label:<34}{value}")
    print("\nrequests: " + ", ".join(f"{k} {n}" for k, n in r.requests.items()))
    for bad in r.bad_studies:
        print(f"NOT recorded once: {bad}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=50)
    ap.add_argument("--namespaces", type=int, default=5)
    ap.add_argument("--trainings", type=int, default=20_000, help="in all, shared out")
    ap.add_argument("--parallelism", type=int, default=10, help="per study")
    ap.add_argument("--capacity", type=int, help="pods bound at once, cluster-wide")
    ap.add_argument("--preempt", type=float, default=0.0, help="share of pods preempted")
    ap.add_argument("--poll", type=float, default=1.0, help="the operator's --poll")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    # Stopped with SIGTERM: still stop the operator, the S3 server and the emulator.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = Plan(
        args.studies,
        args.namespaces,
        args.trainings,
        args.parallelism,
        capacity=args.capacity,
        preempt=args.preempt,
    )
    result = run(plan, poll_s=args.poll)
    print_result(result)
    if args.json:
        command = " ".join([".venv/bin/python benchmarks/operator_many.py", *sys.argv[1:]])
        args.json.write_text(json.dumps({"command": command, **asdict(result)}, indent=2) + "\n")
    sys.exit(0 if result.all_recorded_once else 1)


if __name__ == "__main__":
    main()
