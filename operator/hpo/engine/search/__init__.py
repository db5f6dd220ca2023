"""Search strategies behind one seam (``NarrowSearch``): what the narrow stage proposes next.

A strategy never holds state a restart could lose: it proposes from what is
recorded and planned (``Records``), with a random generator seeded from the
study's seed and how many configurations were planned before, so a resumed study
decides alike. A new strategy is one new module and one line in ``STRATEGIES``.
"""

from __future__ import annotations

from collections.abc import Callable

from hpo.engine.search.base import NarrowSearch, Proposal, Records
from hpo.study.spec import StudySpec

#: Builds a strategy for a study.
SearchFactory = Callable[[StudySpec], NarrowSearch]


def _local(spec: StudySpec) -> NarrowSearch:
    from hpo.engine.search.local import LocalSearch

    return LocalSearch(spec)


def _gaussian(spec: StudySpec) -> NarrowSearch:
    # scikit-optimize costs seconds to import: only a study that uses it pays.
    from hpo.engine.search.gaussian import GaussianSearch

    return GaussianSearch(spec)


#: The strategies by the spec's ``bayesianStage.method``.
STRATEGIES: dict[str, SearchFactory] = {"localSearch": _local, "gaussianProcess": _gaussian}


def narrow_search(spec: StudySpec) -> NarrowSearch:
    """The strategy ``spec`` asks for."""
    return STRATEGIES[spec.narrow_stage.method](spec)


__all__ = ["STRATEGIES", "NarrowSearch", "Proposal", "Records", "SearchFactory", "narrow_search"]
