"""Which devices TensorFlow sees, and the refusal to train on the CPU when a GPU was asked.

A pod whose limits ask for ``nvidia.com/gpu`` gets ``HPO_GPUS`` (``hpo.kube.pods``). A
GPU pod on a node without a working driver, or running the CPU image, would otherwise
train on the CPU: right results, many times slower, and nobody told. Here it fails
instead, every seed with the same message, which the ledger's error column shows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from hpo.study.contract import GPUS_ENV


@dataclass(frozen=True)
class Devices:
    """The physical devices TensorFlow lists, by kind."""

    cpus: int
    gpus: list[str]

    def describe(self) -> str:
        gpus = ", ".join(self.gpus) if self.gpus else "no GPU"
        return f"TensorFlow sees {self.cpus} CPU(s) and {gpus}"


def visible_devices() -> Devices:
    """What TensorFlow finds (imports it; call after ``configure_runtime``)."""
    import tensorflow as tf

    return Devices(
        cpus=len(tf.config.list_physical_devices("CPU")),
        gpus=[
            d.name.removeprefix("/physical_device:") for d in tf.config.list_physical_devices("GPU")
        ],
    )


def gpus_required(environ: Mapping[str, str] | None = None) -> int:
    """How many GPUs the pod asked for (``HPO_GPUS``; 0 if unset)."""
    raw = (os.environ if environ is None else environ).get(GPUS_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise ValueError(f"{GPUS_ENV}={raw!r} is not a whole number of GPUs")
    return int(raw)


def gpu_problem(devices: Devices, required: int, variant: str = "") -> str | None:
    """Why this process must not train (too few GPUs for what was asked), else None."""
    if required <= len(devices.gpus):
        return None
    hint = (
        "the image is the CPU build (tensorflow-cpu): use the -gpu image"
        if variant == "cpu"
        else "check the node's NVIDIA driver and device plugin, and that the image is "
        "the -gpu build"
    )
    return (
        f"the pod asks for {required} GPU(s) (nvidia.com/gpu) but {devices.describe()}; "
        f"not training on the CPU instead: {hint}"
    )
