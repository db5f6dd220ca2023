"""Command line of the trainer image: one request in, one JSON line per seed out.

    python -m hpo_trainer --request FILE_OR_JSON --store-root DIR [--termination-log PATH]

Stdout carries one ``SeedResult`` JSON per line, for whoever runs the image by
hand; no runner reads it (the local runner calls ``train_one`` in its worker
processes). ``--termination-log`` receives a compact JSON list of the same
results under Kubernetes' 4 KB termination-message limit: the operator takes a
failure's reason from it, and a success from the seed's ``scores.json`` in the
store. If the request itself cannot be read, that file receives
``{"error": "..."}`` instead, as it does when the output cannot be written
(no space left, read-only). Exit code: 0 if every seed succeeded, 1 if any
failed, 2 if the request was unusable, 3 if the output could not be written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hpo.study.contract import SeedResult, TrainingRequest

#: Kubernetes truncates termination messages at 4096 bytes.
TERMINATION_LIMIT = 4096
_ESSENTIAL = ("trial", "seed", "status", "mae", "error", "artifacts")


def read_request(value: str) -> TrainingRequest:
    """Inline JSON if it looks like an object, else the path of a JSON file."""
    text = value if value.lstrip().startswith("{") else Path(value).read_text()
    return TrainingRequest.from_json(text)


def termination_message(results: list[SeedResult], limit: int = TERMINATION_LIMIT) -> str:
    """Compact JSON list of results, dropping detail until it fits in ``limit`` bytes.

    First per-label scores go, then the config (the operator has it), then
    everything but the essentials, and as a last resort error messages are
    shortened.
    """
    rows: list[dict[str, Any]] = [asdict(r) for r in results]

    def dump() -> str:
        return json.dumps(rows, separators=(",", ":"), sort_keys=True)

    emptied: tuple[tuple[str, dict[str, Any]], ...] = (("per_label", {}), ("config", {}))
    for field, empty in emptied:
        if len(dump().encode()) <= limit:
            break
        for row in rows:
            row[field] = empty
    if len(dump().encode()) > limit:
        rows = [{k: row[k] for k in _ESSENTIAL} for row in rows]
    width = 200
    while len(dump().encode()) > limit and width >= 20:
        for row in rows:
            if row.get("error") and len(row["error"]) > width:
                row["error"] = row["error"][: width - 3] + "..."
        width //= 2
    return dump()


def _write(path: Path | None, text: str) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpo_trainer", description=__doc__)
    parser.add_argument("--request", required=True, help="TrainingRequest JSON, or a file of it")
    parser.add_argument(
        "--store-root", type=Path, help="LocalStore folder (default: the request's store)"
    )
    parser.add_argument("--termination-log", type=Path, help="where to write the results summary")
    args = parser.parse_args(argv)

    try:
        request = read_request(args.request)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        message = f"invalid training request: {type(exc).__name__}: {exc}"
        print(message, file=sys.stderr)
        _write(args.termination_log, json.dumps({"error": message[:2000]}))
        return 2

    from hpo.store import LocalStore, OutputUnwritable, Store, StoreError, open_store
    from hpo_trainer.train import train_request

    store: Store
    try:
        if args.store_root is not None:
            store = LocalStore(args.store_root)
        elif request.store is not None:
            store = open_store(request.store)
        else:
            raise StoreError("no store: give --store-root or a request with a store")
    except StoreError as exc:
        message = f"cannot open the store: {exc}"
        print(message, file=sys.stderr)
        _write(args.termination_log, json.dumps({"error": message[:2000]}))
        return 2
    # Stdout carries only result lines; stray library prints go to stderr.
    try:
        with contextlib.redirect_stdout(sys.stderr):
            results = train_request(request, store)
    except OutputUnwritable as exc:
        print(str(exc), file=sys.stderr)
        _write(args.termination_log, json.dumps({"error": str(exc)[:2000]}))
        return 3
    for result in results:
        print(result.to_json(), flush=True)
        if result.status != "succeeded":
            print(f"seed {result.seed} failed: {result.error}", file=sys.stderr)
    _write(args.termination_log, termination_message(results))
    return 0 if all(r.status == "succeeded" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
