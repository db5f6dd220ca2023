"""Where a browsing command looks: a run folder, a study folder, ``s3://bucket/prefix`` or a
study's YAML file (its own store), opened through ``hpo.results.location``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpo.cli.common import fail, load

if TYPE_CHECKING:
    from hpo.results import StudyResults
    from hpo.store import Store

Endpoint = Annotated[
    str | None,
    typer.Option(
        envvar="HPO_S3_ENDPOINT",
        metavar="HOST:PORT",
        help="S3 endpoint, for s3:// locations (default: the study file's spec.storage).",
    ),
]
Tls = Annotated[
    bool | None,
    typer.Option(
        "--tls/--no-tls",
        envvar="HPO_S3_TLS",
        show_default=False,
        help="HTTPS to the S3 endpoint (default: the study file's spec.storage.tls, else HTTPS).",
    ),
]
#: What a browsing command is pointed at: a folder, a bucket URL or a study file.
WHERE_HELP = "runs/NAME, s3://bucket/prefix/namespace/NAME, or the study's YAML file"
StudyArg = Annotated[str, typer.Argument(metavar="STUDY", help=f"A study: {WHERE_HELP}.")]


def _open(where: str, endpoint: str | None, tls: bool | None) -> tuple[Store, str]:
    from hpo.results.location import open_location
    from hpo.store import StoreError
    from hpo.study.spec import SpecError

    try:
        return open_location(where, endpoint=endpoint, tls=True if tls is None else tls)
    except SpecError as exc:
        fail(exc.problems)
    except StoreError as exc:
        fail([store_problem(exc, endpoint, tls)])


def store_problem(exc: Exception, endpoint: str | None, tls: bool | None) -> str:
    """The store's error, plus the likely fix when HTTPS met a plain-http endpoint."""
    text = str(exc)
    if tls is not False and any(
        s in text for s in ("WRONG_VERSION_NUMBER", "wrong version number", "SSL", "record layer")
    ):
        text += f"; if {endpoint or 'the endpoint'} speaks plain http, add --no-tls"
    return text


def study_file(where: str) -> Path | None:
    """``where`` as a study file (YAML), if it is one."""
    path = Path(where)
    return path if path.suffix in (".yaml", ".yml") and path.is_file() else None


def study_location(
    where: str, endpoint: str | None, tls: bool | None, *, study_folder: bool = True
) -> tuple[Store, str]:
    """The store and the key prefix of a study (``study_folder``) or of a folder of studies.

    A study file gives its own store: endpoint, TLS, bucket and prefix from its
    ``spec.storage`` (``--endpoint``/``--tls`` still win), the study under
    ``<prefix>/<namespace>/<name>`` as ``hpo run`` wrote it.
    """
    from hpo.results import ResultsError
    from hpo.results.location import open_where, reading_ref
    from hpo.store import StoreError, open_store
    from hpo.study.spec import SpecError

    path = study_file(where)
    if path is not None:
        study = load(path)
        ref = reading_ref(study, endpoint=endpoint, tls=tls)
        if ref.kind == "local" and not Path(ref.root).is_dir():
            fail([f"{where}: its run folder {ref.root} does not exist (has it run?)"])
        try:
            store = open_store(ref)
        except SpecError as exc:
            fail(exc.problems)
        except StoreError as exc:
            fail([store_problem(exc, ref.endpoint, ref.tls)])
        return store, study.name if study_folder else ""
    if where.startswith("s3://"):
        return _open(where, endpoint, tls)
    if not Path(where).exists():
        what = "study" if study_folder else "folder"
        fail([f"{where}: no such {what} (nothing there)"])
    if not Path(where).is_dir():
        fail([f"{where}: is a file; give a run folder, a study folder or a study's YAML file"])
    if not study_folder:
        return _open(where, endpoint, tls)
    try:
        return open_where(where)
    except ResultsError as exc:
        fail([str(exc)])


def study_results(where: str, endpoint: str | None, tls: bool | None) -> StudyResults:
    """A study's results (``hpo.results``): a folder, an ``s3://`` URL or its YAML file."""
    from hpo.results import ResultsError, StudyResults, open_study

    try:
        if study_file(where) is not None:
            store, root = study_location(where, endpoint, tls)
            return StudyResults(store, root, where)
        return open_study(where, endpoint=endpoint, tls=tls)
    except ResultsError as exc:
        fail([store_problem(exc, endpoint, tls)])
