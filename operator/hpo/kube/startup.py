"""Setting one study up before its loop runs: the spec it runs with, its store and the
Secret's credentials, its dataset, its history and the pods of an earlier run.

Kept apart from the loop (``hpo.kube.runner``: pods <-> tasks). A step that cannot go on
raises ``NotYet`` (the store is unreachable: try again later) or ``Stalled`` (its user must
fix something; the message says what), and a study that has ended is not set up at all.
``again`` in the signatures is how the message says when it is checked again.
"""

from __future__ import annotations

from typing import Any

from hpo.data.checks import DatasetProblem
from hpo.engine import HistoryConflict, Task
from hpo.kube.api import Cluster, SecretProblem
from hpo.kube.disruption import DisruptionLog
from hpo.kube.pods import tasks_of
from hpo.kube.status import Conditions, StudyStatus
from hpo.records.warmstart import WarmStartProblem
from hpo.session import DatasetChanged, StudySession
from hpo.store import StoreError, StoreRef
from hpo.study.spec import SpecError, Study, parse_study, study_resource
from hpo.study.storage import store_ref_for


class NotYet(Exception):
    """The study cannot start yet (its store is unreachable); try again later."""


class Stalled(Exception):
    """The study cannot start until its user fixes something: a wrong spec, a missing
    Secret or dataset. It waits in ``Pending`` and checks again (at once on a new
    generation of its spec); the message says what to fix."""

    def __init__(self, condition: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.condition = condition
        self.reason = reason
        self.message = message


#: ``Failed`` reasons an earlier operator gave up on that a user can fix in place: such a
#: study is checked again when its loop starts.
FIXABLE = frozenset({"InvalidSpec", "CredentialsMissing", "InvalidDataset", "RecordsConflict"})
FIX_SPEC = "correct the spec (kubectl apply or edit): the study starts once it is valid"


def ended(status: dict[str, Any], failed_for: str) -> bool:
    """Succeeded, or failed for a reason its user cannot fix in place: nothing to run.

    Only the terminal phases are read, so a running phase an older operator wrote (such as
    ``BayesianSearch``, since renamed ``NarrowSearch``) resumes like any other."""
    phase = status.get("phase")
    if phase == "Succeeded":
        return True
    return phase == "Failed" and failed_for not in FIXABLE


def resource_as_run(body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """The study resource with the spec it runs with (``status.acceptedSpec``)."""
    resource = study_resource(body)
    accepted = status.get("acceptedSpec")
    if isinstance(accepted, dict) and accepted != resource["spec"]:
        # Changed since the study started (refused while it ran, or made while no
        # operator ran it): it goes on as it was; the first step says what is refused.
        resource["spec"] = accepted
    return resource


def parse(resource: dict[str, Any], status: StudyStatus) -> Study | None:
    """The study; None (and ``Failed``) for an invalid name, ``Stalled`` for a bad spec."""
    try:
        study = parse_study(resource)
    except SpecError as exc:
        problems = "; ".join(exc.problems)
        if all(p.startswith("metadata.") for p in exc.problems):
            # A name cannot change: nothing to wait for.
            status.fail(
                "Valid",
                "InvalidName",
                f"{problems}; delete the study and create it under a valid name",
            )
            return None
        raise Stalled("Valid", "InvalidSpec", f"{problems}; {FIX_SPEC}") from None
    status.conditions.set("Valid", True, "SpecValid")
    return study


def store_for(
    cluster: Cluster, namespace: str, study: Study, again: str
) -> tuple[StoreRef, tuple[str, str]]:
    """The study's s3 store and its credentials; raises ``Stalled`` naming what is missing."""
    storage = study.spec.storage
    if storage.type != "s3":
        raise Stalled(
            "Valid",
            "InvalidSpec",
            "spec.storage.type: trainer pods share no disk with the operator; "
            f"use an s3 store (MinIO) on a cluster; {FIX_SPEC}",
        )
    if storage.credentials_secret is None:
        raise Stalled(
            "Valid",
            "InvalidSpec",
            "spec.storage.credentialsSecret: is required on a cluster (a Secret with the "
            f"store's access and secret keys); {FIX_SPEC}",
        )
    secret = storage.credentials_secret
    try:
        credentials = cluster.read_credentials(
            namespace, secret.name, secret.access_key_key, secret.secret_key_key
        )
    except SecretProblem as exc:
        raise Stalled("StoreReady", "CredentialsMissing", f"{exc}; {again}") from None
    return store_ref_for(study), credentials


def open_session(
    study: Study,
    ref: StoreRef,
    credentials: tuple[str, str] | None,
    status: StudyStatus,
    status_every_s: float,
    again: str,
) -> StudySession:
    """The session on the study's store, its dataset checked."""
    try:
        session = StudySession.open(
            study,
            ref,
            credentials=credentials,
            keep_failures=True,
            folders=False,
            runner="operator",
            status_every_s=status_every_s,
        )
    except StoreError as exc:
        # Perhaps an outage, perhaps a missing bucket: say so and try again later.
        raise NotYet(str(exc)) from None
    except DatasetProblem as exc:
        raise Stalled(
            "DatasetReady",
            "InvalidDataset",
            f"{exc}; put the dataset there or correct spec.dataset: {again}",
        ) from None
    prepared = session.prepared
    status.store_ready(ref.uri)
    status.conditions.set(
        "DatasetReady",
        True,
        "DatasetChecked",
        f"{prepared.rows} rows usable, {prepared.rows_dropped} with missing values",
    )
    return session


def resume(
    cluster: Cluster,
    namespace: str,
    session: StudySession,
    study: Study,
    again: str,
    disruptions: DisruptionLog,
) -> dict[str, list[Task]]:
    """Start the session on its history. The pods of an earlier run of the loop (an operator
    restart) are adopted, not redone: by name, with the tasks not recorded yet, and with
    their trainings' disruption counts (``trainer.maxDisruptions`` goes on, not from 0)."""
    found_pods = cluster.list_pods(namespace, study.name)
    pods = {p["metadata"]["name"]: tasks_of(p) for p in found_pods}
    try:
        session.start([t for tasks in pods.values() for t in tasks])
    except StoreError as exc:
        raise NotYet(str(exc)) from None
    except DatasetChanged as exc:
        raise Stalled("DatasetReady", "DatasetChanged", f"{exc}; {again}") from None
    except WarmStartProblem as exc:
        raise Stalled(
            "WarmStartReady",
            "InvalidWarmStart",
            f"{exc}; correct spec.warmStart (nothing was written): {again}",
        ) from None
    except HistoryConflict as exc:
        raise Stalled(
            "Valid",
            "RecordsConflict",
            f"{exc}; point spec.storage (bucket or prefix) at a place of its own, or "
            "remove the old records there",
        ) from None
    engine = session.engine
    adopted: dict[str, list[Task]] = {}
    for pod in found_pods:
        meta = pod["metadata"]
        tasks = [t for t in pods[meta["name"]] if not engine.is_recorded(t.id)]
        disruptions.restore(tasks, meta.get("annotations") or {})
        adopted[meta["name"]] = tasks
    return adopted


def announce(
    cluster: Cluster, session: StudySession, body: dict[str, Any], conditions: Conditions
) -> None:
    """The warm start taken, and the notes of the dataset, the warm start and the engine."""
    taken = session.warm_start
    if taken is not None:
        conditions.set(
            "WarmStartReady",
            True,
            "WarmStartTaken",
            f"{len(taken.warm.results)} trainings counted, {len(taken.warm.first)} "
            "configurations tried first",
        )
    for note in session.notes:
        cluster.event(body, "Normal", "Note", note)
