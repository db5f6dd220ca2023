"""Generate the bundled example dataset: ``examples/data/transistor.csv``.

A synthetic but physically plausible MOSFET characterisation table: geometry,
oxide thickness, threshold voltage and bias point in; drain current,
transconductance and output conductance out. It exists so that a study can be
run end to end without bringing data, and so the tests have something
realistic to train on.

The output is deterministic (fixed seed, values rounded to 6 significant
digits, fixed formatting), so re-running the script reproduces the shipped
CSV byte for byte; ``tests/unit/test_dataset.py`` checks that.

    python examples/make_dataset.py [--out PATH] [--rows N]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

SEED = 20240607
ROWS = 1200
MISSING_FRACTION = 0.01
NOISE = 0.025  # relative (multiplicative) measurement noise on every output

EPS_OX = 3.9 * 8.854e-12  # F/m, SiO2
MU_N = 0.04  # m^2/(V s), low-field electron mobility
THETA = 0.2  # 1/V, mobility degradation with overdrive
SLOPE_N = 1.5  # subthreshold slope factor
V_T = 0.025852  # V, thermal voltage at 300 K
LAMBDA_UM = 0.08  # 1/V * um: channel-length modulation, lambda = LAMBDA_UM / L

FEATURES = ("W_um", "L_um", "tox_nm", "Vth_V", "Vgs_V", "Vds_V")
LABELS = ("Id_mA", "gm_mS", "gds_uS")
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "transistor.csv"


def drain_current(
    w_um: np.ndarray,
    l_um: np.ndarray,
    tox_nm: np.ndarray,
    vth: np.ndarray,
    vgs: np.ndarray,
    vds: np.ndarray,
) -> np.ndarray:
    """Drain current in amperes: square law with a smooth subthreshold onset.

    The overdrive goes through a softplus (EKV-style interpolation), so the
    current is continuous and differentiable from weak to strong inversion;
    triode and saturation meet with matching value and slope at Vds = Vov.
    """
    cox = EPS_OX / (tox_nm * 1e-9)
    scale = 2.0 * SLOPE_N * V_T
    vov = scale * np.logaddexp(0.0, (vgs - vth) / scale)
    k = MU_N / (1.0 + THETA * vov) * cox * (w_um / l_um)
    clm = 1.0 + (LAMBDA_UM / l_um) * vds
    triode = k * (vov * vds - 0.5 * vds**2)
    saturation = 0.5 * k * vov**2
    return np.where(vds < vov, triode, saturation) * clm


def round_sig(values: np.ndarray, digits: int = 6) -> list[str]:
    """Format to ``digits`` significant digits; NaN becomes an empty cell."""
    return ["" if np.isnan(v) else f"{v:.{digits}g}" for v in values]


def make_table(rows: int = ROWS, seed: int = SEED) -> dict[str, np.ndarray]:
    """Sample devices and bias points, evaluate the model, add noise and holes."""
    rng = np.random.default_rng(seed)
    w = np.exp(rng.uniform(np.log(1.0), np.log(20.0), rows))
    length = np.exp(rng.uniform(np.log(0.5), np.log(5.0), rows))
    tox = rng.uniform(3.0, 10.0, rows)
    vth = rng.uniform(0.3, 0.8, rows)
    vgs = rng.uniform(0.0, 3.0, rows)
    vds = rng.uniform(0.0, 3.0, rows)

    # Small-signal parameters by central differences of the noiseless model.
    h = 1e-5
    i_d = drain_current(w, length, tox, vth, vgs, vds)
    g_m = (
        drain_current(w, length, tox, vth, vgs + h, vds)
        - drain_current(w, length, tox, vth, vgs - h, vds)
    ) / (2 * h)
    g_ds = (
        drain_current(w, length, tox, vth, vgs, vds + h)
        - drain_current(w, length, tox, vth, vgs, vds - h)
    ) / (2 * h)

    table = {
        "W_um": w,
        "L_um": length,
        "tox_nm": tox,
        "Vth_V": vth,
        "Vgs_V": vgs,
        "Vds_V": vds,
        "Id_mA": i_d * 1e3,
        "gm_mS": g_m * 1e3,
        "gds_uS": g_ds * 1e6,
    }
    for label in LABELS:
        table[label] = table[label] * (1.0 + NOISE * rng.standard_normal(rows))

    # Knock out one value in ~1% of the rows, like a failed measurement.
    holes = rng.choice(rows, size=max(1, round(rows * MISSING_FRACTION)), replace=False)
    columns = list(table)
    for row in holes:
        table[columns[rng.integers(len(columns))]][row] = np.nan
    return table


def write_csv(table: dict[str, np.ndarray], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    cells = [round_sig(values) for values in table.values()]
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(table.keys())
        writer.writerows(zip(*cells, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to write")
    parser.add_argument("--rows", type=int, default=ROWS, help="number of rows")
    args = parser.parse_args(argv)
    write_csv(make_table(args.rows), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
