"""HEBO (the NeurIPS 2020 black-box optimisation challenge's winner) behind the JSON
protocol (``serve.py``).

Run in ``benchmarks/.venv-hebo`` (``make bench-peers``: HEBO needs numpy < 1.25). Its
defaults as its README runs it: ``HEBO(space)``, ``suggest(n_suggestions=1)``,
``observe``; Sobol points first (one more than there are parameters), then its
GP with input warping and the evolutionary optimisation of its MACE acquisition.
A suggestion asked while others still train does not know of them (HEBO has no
notion of pending points), as with a user who asks whenever a worker frees.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from hebo.design_space.design_space import DesignSpace
from hebo.optimizers.hebo import HEBO
from serve import serve


class HeboStudy:
    def __init__(self, space: dict[str, dict[str, Any]], seed: int, budget: int) -> None:
        np.random.seed(seed)  # HEBO draws from numpy's and torch's global generators
        torch.manual_seed(seed)
        params = []
        for name, p in space.items():
            n = int(p["size"])
            if p["type"] == "int":
                params.append({"name": name, "type": "int", "lb": 0, "ub": n - 1})
            else:
                values = [str(i) for i in range(n)]
                params.append({"name": name, "type": "cat", "categories": values})
        self.names = list(space)
        self.opt = HEBO(DesignSpace().parse(params), scramble_seed=seed)
        self.pending: dict[int, pd.DataFrame] = {}
        self.asked = 0

    def ask(self) -> tuple[int, dict[str, int]]:
        rec = self.opt.suggest(n_suggestions=1)
        ident = self.asked
        self.asked += 1
        self.pending[ident] = rec
        row = rec.iloc[0]
        return ident, {name: int(row[name]) for name in self.names}

    def tell(self, ident: int, loss: float) -> None:
        self.opt.observe(self.pending.pop(ident), np.array([[loss]]))


if __name__ == "__main__":
    serve(HeboStudy)
