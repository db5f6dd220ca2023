"""Cost of a local run: ``hpo run`` against Keras Tuner on the same space, budget and model.

Both sides run as a fresh command, timed from start to exit (interpreter and
TensorFlow start-up included), on examples/quickstart.yaml's space:

- ``hpo run``: the study as written (random stage, then Bayesian stage), its
  local runner with ``spec.parallelism`` worker processes, ledger, artifacts
  and plots;
- Keras Tuner, used the way its guide shows: one process, a ``HyperModel``
  whose ``build`` is our trainer's ``build_model`` and whose ``fit`` uses the
  configuration's batch size, ``executions_per_trial`` = our seeds per
  configuration, ``max_trials`` = our number of configurations, the same
  epochs, the same early stopping (validation loss, restore best weights) and
  the same standardised train/validation split.

Nothing is asserted: the machine is shared, so read the ratio within one run.

    .venv/bin/python benchmarks/kt_side_by_side.py [--tuner bayes|random] [--parallelism 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "trainer-image"))
STUDY = REPO / "examples" / "quickstart.yaml"


def study_file(folder: Path, parallelism: int, epochs: int | None) -> tuple[Path, dict[str, Any]]:
    """The quickstart study with an absolute dataset path; returns the file and its spec."""
    raw = yaml.safe_load(STUDY.read_text())
    raw["metadata"]["name"] = "side-by-side"
    spec = raw["spec"]
    spec["dataset"]["path"] = str(REPO / "examples" / "data" / "transistor.csv")
    spec["parallelism"] = parallelism
    if epochs is not None:
        spec["training"]["epochs"] = epochs
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, spec


def run_hpo(path: Path, out: Path) -> dict[str, Any]:
    """``hpo run`` as a user types it; trainings counted from the stored scores."""
    from hpo.study.layout import SCORES_FILE

    hpo = Path(sys.executable).parent / "hpo"
    start = time.perf_counter()
    subprocess.run([str(hpo), "run", str(path), "--out", str(out), "-q"], check=True)
    wall = time.perf_counter() - start
    trainings = len(list(out.rglob(SCORES_FILE)))
    return {"wall": wall, "trainings": trainings}


def run_kt(spec: dict[str, Any], tuner: str, out: Path) -> dict[str, Any]:
    """Keras Tuner in its own process (``_kt`` below), as a user's script would run."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "_kt", json.dumps(spec), tuner, str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the Keras Tuner run failed:\n{proc.stderr[-3000:]}")
    return {"wall": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def kt_main(spec: dict[str, Any], tuner_name: str, out: str) -> None:
    """The Keras Tuner side: our data split, our model, Keras Tuner's search loop."""
    import keras
    import keras_tuner as kt

    from hpo.study.contract import DatasetRef
    from hpo.study.spec import SearchSpace
    from hpo_trainer.data import load_splits
    from hpo_trainer.model import MlpConfig, build_model

    ds = spec["dataset"]
    data = load_splits(DatasetRef(ds["path"], ds["features"], ds["labels"]))
    fs, ls = data.feature_scaler, data.label_scaler
    x_train, y_train = fs.transform(data.x_train), ls.transform(data.y_train)
    x_val, y_val = fs.transform(data.x_val), ls.transform(data.y_val)
    space = SearchSpace.model_validate(spec["searchSpace"])
    n = space.neurons

    class Mlp(kt.HyperModel):
        def build(self, hp: kt.HyperParameters) -> keras.Model:
            layers = hp.Int("hidden_layers", space.hidden_layers.min, space.hidden_layers.max)
            config = MlpConfig(
                neurons=tuple(
                    hp.Int(f"neurons_{i}", n.min, n.max, step=n.step) for i in range(layers)
                ),
                activation=hp.Choice("activation", space.activations),
                learning_rate=hp.Float(
                    "learning_rate",
                    space.learning_rate.min,
                    space.learning_rate.max,
                    sampling="log",
                ),
                batch_size=hp.Choice("batch_size", space.batch_sizes),
                optimizer=hp.Choice("optimizer", space.optimizers),
            )
            return build_model(config, x_train.shape[1], y_train.shape[1])

        def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any):
            return model.fit(*args, batch_size=hp.get("batch_size"), **kwargs)

    training = spec["training"]
    stages = spec["bayesianStage"]
    configs = spec["randomStage"]["configurations"] + stages["topK"] * stages["trialsPerConfig"]
    base = kt.BayesianOptimization if tuner_name == "bayes" else kt.RandomSearch

    class Tuner(base):  # type: ignore[misc, valid-type]
        def _configure_tensorboard_dir(self, *args: Any, **kwargs: Any) -> None:
            # Keras Tuner 1.4.8 imports tensorboard here on every trial; TensorFlow 2.21 no
            # longer installs it, and no TensorBoard callback is used: nothing to configure.
            return None

    tuner = Tuner(
        Mlp(),
        objective="val_loss",
        max_trials=configs,
        executions_per_trial=training["seedsPerConfig"],
        seed=0,
        directory=out,
        project_name="kt",
        overwrite=True,
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=training["patience"], restore_best_weights=True
    )
    tuner.search(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=training["epochs"],
        callbacks=[stop],
        shuffle=True,
        verbose=0,
    )
    done = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    print(json.dumps({"configs": len(done), "trainings": len(done) * training["seedsPerConfig"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tuner", choices=("bayes", "random"), default="bayes")
    ap.add_argument("--parallelism", type=int, default=2, help="hpo run's worker processes")
    ap.add_argument("--epochs", type=int, help="override the study's epochs (smoke runs)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate both sides this many times")
    args = ap.parse_args()
    rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="hpo-side-by-side-") as tmp:
        folder = Path(tmp)
        path, spec = study_file(folder, args.parallelism, args.epochs)
        for i in range(args.rounds):
            # Alternating the order spreads a change in the machine's load over both sides.
            if i % 2 == 0:
                ours = run_hpo(path, folder / f"hpo-{i}")
                theirs = run_kt(spec, args.tuner, str(folder / f"kt-{i}"))
            else:
                theirs = run_kt(spec, args.tuner, str(folder / f"kt-{i}"))
                ours = run_hpo(path, folder / f"hpo-{i}")
            rounds.append((ours, theirs))
    t = spec["training"]
    print(f"machine: {os.cpu_count()} cores; examples/quickstart.yaml's space and budget:")
    print(
        f"  {theirs['configs']} configurations x {t['seedsPerConfig']} seeds, {t['epochs']} "
        f"epochs, patience {t['patience']}, on examples/data/transistor.csv\n"
    )
    header = f"{'command':<44}{'trainings':>10}{'wall s':>9}{'per min':>9}"
    print(header)
    print("-" * len(header))
    name = "BayesianOptimization" if args.tuner == "bayes" else "RandomSearch"
    for ours, theirs in rounds:
        for label, m in (
            (f"hpo run (parallelism {args.parallelism})", ours),
            (f"Keras Tuner {name} (one process)", theirs),
        ):
            per_min = 60 * m["trainings"] / m["wall"]
            print(f"{label:<44}{m['trainings']:>10}{m['wall']:>9.1f}{per_min:>9.1f}")
    ratios = [theirs["wall"] / ours["wall"] for ours, theirs in rounds]
    shown = ", ".join(f"{r:.2f}x" for r in ratios)
    print(f"\nwall time, Keras Tuner / hpo run: {statistics.median(ratios):.2f}x (median; {shown})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_kt":
        kt_main(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        main()
