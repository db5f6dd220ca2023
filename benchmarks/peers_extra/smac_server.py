"""SMAC3's hyperparameter-optimisation facade behind the JSON protocol (``serve.py``).

Run in ``benchmarks/.venv-smac`` (``make bench-peers``). The facade as its users run
it: its defaults (random-forest surrogate, Sobol initial design of at most a quarter
of the trials, log-EI), ``deterministic=True`` (one training per configuration, as
every peer here gets), ask/tell so trainings may still be running when it asks.
"""

from __future__ import annotations

import tempfile
from typing import Any

from ConfigSpace import Categorical, ConfigurationSpace, Integer
from serve import serve
from smac import HyperparameterOptimizationFacade, Scenario
from smac.runhistory.dataclasses import TrialInfo, TrialValue


class SmacStudy:
    def __init__(self, space: dict[str, dict[str, Any]], seed: int, budget: int) -> None:
        cs = ConfigurationSpace(seed=seed)
        for name, p in space.items():
            n = int(p["size"])
            if p["type"] == "int":
                cs.add(Integer(name, (0, n - 1)))
            else:
                cs.add(Categorical(name, [str(i) for i in range(n)]))
        self.space = space
        self._dir = tempfile.TemporaryDirectory(prefix="smac-")
        scenario = Scenario(
            cs,
            deterministic=True,
            n_trials=budget,
            seed=seed,
            output_directory=self._dir.name,
        )
        self.smac = HyperparameterOptimizationFacade(
            scenario,
            lambda config, seed=0: 0.0,  # never called: ask/tell
            overwrite=True,
            logging_level=40,
        )
        self.pending: dict[int, TrialInfo] = {}
        self.asked = 0

    def ask(self) -> tuple[int, dict[str, int]]:
        info = self.smac.ask()
        ident = self.asked
        self.asked += 1
        self.pending[ident] = info
        params = {name: int(info.config[name]) for name in self.space}
        return ident, params

    def tell(self, ident: int, loss: float) -> None:
        self.smac.tell(self.pending.pop(ident), TrialValue(cost=loss))


if __name__ == "__main__":
    serve(SmacStudy)
