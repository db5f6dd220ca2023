"""The Keras MLP, its training loop and the TensorFlow process settings.

Reproducibility is the point of this module: with op determinism enabled and
fixed thread pools once per process, plus ``clear_session`` and
``set_random_seed`` before every training, the same configuration and seed
give a bit-identical model, in a fresh process or in a long-lived worker after
other trainings. TensorFlow is imported lazily, when a training starts, so
importing the trainer package (a worker process, ``python -m hpo_trainer``
reading its request) stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.study.contract import (
    ACTIVATION,
    BATCH_SIZE,
    DROPOUT,
    HIDDEN_LAYERS,
    L2,
    LEARNING_RATE,
    LR_SCHEDULE,
    NEURONS,
    OPTIMIZER,
)

if TYPE_CHECKING:
    import keras

ACTIVATIONS = ("relu", "tanh", "elu", "selu", "gelu", "swish", "sigmoid", "leaky_relu")
OPTIMIZERS = ("adam", "adamw", "nadam", "rmsprop", "sgd", "adamax")
LR_SCHEDULES = ("constant", "cosine")
PREDICT_BATCH = 4096

# Must be set before TensorFlow is first imported to silence its C++ logging.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_runtime_lock = threading.Lock()
_runtime_threads: int | None = None
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The hyperparameter configuration is not one this trainer can build."""


def _positive_int(value: Any, name: str) -> int:
    """Accept ints (also numpy's, or integral floats from JSON/optimisers), refuse the rest."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _per_layer(value: Any, layers: int, name: str) -> tuple[Any, ...] | None:
    """A list/tuple given for a per-layer key, checked to have one entry per hidden layer.

    ``None`` means "one value for every layer" (a scalar was given).
    """
    if isinstance(value, str) or not isinstance(value, list | tuple):
        return None
    if len(value) != layers:
        raise ConfigError(
            f"{name} must be one value or a list of one value per hidden layer ({layers}), "
            f"got {len(value)}: {list(value)!r}"
        )
    return tuple(value)


def _activation(value: Any) -> str:
    activation = str(value).lower()
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    return activation


def _fraction(value: Any, name: str) -> float:
    """A dropout rate in [0, 1); bools and non-numbers are refused, not coerced."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
    rate = float(value)
    if not (np.isfinite(rate) and 0.0 <= rate < 1.0):
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
    return rate


@dataclass(frozen=True)
class MlpConfig:
    """A validated configuration: what the search space may vary.

    ``activation`` and ``dropout`` are one value for every hidden layer or a tuple
    with one value per layer; use ``layer_activations``/``layer_dropout`` to read
    them per layer. The defaults of the later fields build exactly the model of
    configurations written before they existed.
    """

    neurons: tuple[int, ...]
    activation: str | tuple[str, ...]
    learning_rate: float
    batch_size: int
    optimizer: str
    #: Dropout rate after each hidden layer; 0 adds no Dropout layer at all.
    dropout: float | tuple[float, ...] = 0.0
    #: L2 weight decay factor on the kernels of every Dense layer, hidden and output.
    l2: float = 0.0
    #: "constant", or "cosine": decay from ``learning_rate`` to 0 over all training steps.
    lr_schedule: str = "constant"

    @property
    def layer_activations(self) -> tuple[str, ...]:
        if isinstance(self.activation, str):
            return (self.activation,) * len(self.neurons)
        return tuple(self.activation)

    @property
    def layer_dropout(self) -> tuple[float, ...]:
        if isinstance(self.dropout, tuple | list):
            return tuple(float(d) for d in self.dropout)
        return (float(self.dropout),) * len(self.neurons)

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> MlpConfig:
        required = (HIDDEN_LAYERS, NEURONS, ACTIVATION, LEARNING_RATE, BATCH_SIZE)
        missing = [k for k in (*required, OPTIMIZER) if k not in config]
        if missing:
            raise ConfigError(f"config is missing key(s): {', '.join(missing)}")
        layers = _positive_int(config[HIDDEN_LAYERS], HIDDEN_LAYERS)
        neurons = config[NEURONS]
        if not isinstance(neurons, list | tuple) or len(neurons) != layers:
            raise ConfigError(
                f"neurons must list one width per hidden layer ({layers}), got {neurons!r}"
            )
        widths = tuple(_positive_int(n, "each entry of neurons") for n in neurons)
        per_layer = _per_layer(config[ACTIVATION], layers, ACTIVATION)
        activation: str | tuple[str, ...] = (
            _activation(config[ACTIVATION])
            if per_layer is None
            else tuple(_activation(a) for a in per_layer)
        )
        optimizer = str(config[OPTIMIZER]).lower()
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
        try:
            learning_rate = float(config[LEARNING_RATE])
        except (TypeError, ValueError):
            learning_rate = float("nan")
        if not (np.isfinite(learning_rate) and learning_rate > 0):
            raise ConfigError(f"learning_rate must be positive, got {config[LEARNING_RATE]!r}")
        batch_size = _positive_int(config[BATCH_SIZE], BATCH_SIZE)
        raw_dropout = config.get(DROPOUT, 0.0)
        rates = _per_layer(raw_dropout, layers, DROPOUT)
        dropout: float | tuple[float, ...] = (
            _fraction(raw_dropout, DROPOUT)
            if rates is None
            else tuple(_fraction(r, f"dropout[{i}]") for i, r in enumerate(rates))
        )
        raw_l2 = config.get(L2, 0.0)
        if isinstance(raw_l2, bool) or not isinstance(raw_l2, numbers.Real):
            raise ConfigError(f"l2 must be a number >= 0, got {raw_l2!r}")
        l2 = float(raw_l2)
        if not (np.isfinite(l2) and l2 >= 0.0):
            raise ConfigError(f"l2 must be a finite number >= 0, got {raw_l2!r}")
        schedule = str(config.get(LR_SCHEDULE, "constant")).lower()
        if schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"unknown lr_schedule {config.get(LR_SCHEDULE)!r}; expected one of {LR_SCHEDULES}"
            )
        return cls(widths, activation, learning_rate, batch_size, optimizer, dropout, l2, schedule)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while TensorFlow's native libraries load.

    They print oneDNN/absl banners before ``TF_CPP_MIN_LOG_LEVEL`` or absl
    settings apply; Python exceptions still propagate and print afterwards.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def configure_runtime(threads: int | None = None) -> None:
    """Quiet TensorFlow, enable op determinism and fix the thread pools, once per process.

    TensorFlow only accepts thread settings before its context starts, so a
    later call with a different count is ignored with a warning: results stay
    reproducible, only the parallelism differs from what was asked. ``None``
    means "whatever is set already, else 1".
    """
    global _runtime_threads
    with _runtime_lock:
        if _runtime_threads is not None:
            if threads is not None and threads != _runtime_threads:
                log.warning(
                    "TensorFlow threads already set to %d in this process; ignoring %d",
                    _runtime_threads,
                    threads,
                )
            return
        with _quiet_stderr():
            import absl.logging
            import keras  # noqa: F401  (its native libraries log on load, too)
            import tensorflow as tf

        threads = 1 if threads is None else threads
        absl.logging.set_verbosity(absl.logging.ERROR)
        tf.get_logger().setLevel(logging.ERROR)
        tf.config.experimental.enable_op_determinism()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            log.warning("TensorFlow already initialised; cannot set threads to %d", threads)
        _runtime_threads = threads


def _optimizer(
    name: str, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> keras.optimizers.Optimizer:
    import keras

    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "nadam": keras.optimizers.Nadam,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
        "adamax": keras.optimizers.Adamax,
    }
    return classes[name](learning_rate=learning_rate)


def _learning_rate(
    config: MlpConfig, decay_steps: int | None
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The constant rate, or a cosine decay to 0 that ends exactly at the last step."""
    import keras

    if config.lr_schedule == "constant":
        return config.learning_rate
    if decay_steps is None or decay_steps < 1:
        raise ConfigError(
            f"lr_schedule {config.lr_schedule!r} needs the number of training steps "
            f"(decay_steps), got {decay_steps!r}"
        )
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate, decay_steps=decay_steps, alpha=0.0
    )


def build_model(
    config: MlpConfig, n_features: int, n_labels: int, decay_steps: int | None = None
) -> keras.Model:
    """Dense hidden layers (each optionally followed by Dropout), a linear output unit per
    label; MSE loss.

    ``l2`` regularises the kernels of the hidden and the output layer alike (not the
    biases): the output layer is a weight matrix like any other, and leaving it out would
    let it grow to undo the shrinking of the last hidden layer. The penalty is part of
    the loss early stopping monitors. ``decay_steps`` (epochs x steps per epoch) is only
    needed by the cosine schedule. With the defaults (no dropout, no l2, constant rate)
    the layers, their names and their seeds are those of models built before the knobs
    existed, so old configurations keep their bit-identical results.
    """
    import keras

    regulariser = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    inputs = keras.Input(shape=(n_features,), name="features")
    x = inputs
    layers = zip(config.neurons, config.layer_activations, config.layer_dropout, strict=True)
    for i, (width, activation, rate) in enumerate(layers):
        x = keras.layers.Dense(
            width, activation=activation, kernel_regularizer=regulariser, name=f"hidden_{i}"
        )(x)
        if rate > 0:
            # Unseeded: its seed generator draws from keras.utils.set_random_seed.
            x = keras.layers.Dropout(rate, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(
        n_labels, activation="linear", kernel_regularizer=regulariser, name="labels"
    )(x)
    model = keras.Model(inputs, outputs, name="mlp")
    optimizer = _optimizer(config.optimizer, _learning_rate(config, decay_steps))
    model.compile(optimizer=optimizer, loss="mse")
    return model


@dataclass(frozen=True)
class Fitted:
    """A trained model, how many epochs ran and how long ``model.fit`` took."""

    model: keras.Model
    epochs_run: int
    fit_s: float


def _stop_on_nan() -> keras.callbacks.Callback:
    """Like ``TerminateOnNaN`` but silent (stdout belongs to the result lines).

    Checked once per epoch: per batch would force a device sync every step.
    """
    import keras

    class StopOnNaN(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                self.model.stop_training = True

    return StopOnNaN()


def train_model(
    config: MlpConfig,
    seed: int,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    epochs: int,
    patience: int,
) -> Fitted:
    """Build and fit from a clean, seeded session.

    ``data`` is (x_train, y_train, x_val, y_val), already standardised. The
    best weights by validation loss are restored at the end. A cosine schedule
    spans ``epochs`` full epochs; early stopping may end the training sooner.
    """
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_val, y_val = (np.asarray(a, dtype=np.float32) for a in data)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    model = build_model(
        config, x_train.shape[1], y_train.shape[1], decay_steps=epochs * steps_per_epoch
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    started = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=[stop, _stop_on_nan()],
        verbose=0,
    )
    fit_s = time.perf_counter() - started
    return Fitted(model, len(history.history.get("loss", [])), fit_s)


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Standardised predictions as float64, with a fixed batch size for stable numerics."""
    out = model.predict(np.asarray(x, dtype=np.float32), batch_size=PREDICT_BATCH, verbose=0)
    return np.asarray(out, dtype=np.float64)


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Save as ``.keras``; hides a harmless NumPy 2 deprecation keras emits per variable."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="__array__ implementation doesn't accept a copy keyword"
        )
        model.save(path)


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """A saved ``.keras`` model for prediction (no optimiser state); TensorFlow's native
    banners are kept off stderr as in ``configure_runtime``."""
    with _quiet_stderr():
        import keras

    return keras.saving.load_model(path, compile=False)
