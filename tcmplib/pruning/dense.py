"""The dense baseline as a method: train the network, prune nothing.

Table 1 has a "Baseline GCN" row beside the pruning methods, and a sweep runs it like any
other configuration (at rate 0). Registering it as a method gives it the same path through
the library as the others: the same report (counts and % A-C measured on the trained
network, all of it A-C unless some unit learned no path), the same record, the same rows
of every table and figure, with no special case for it anywhere else. It has no options.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcmplib.pruning.base import Job, PruneResult, PruningMethod

__all__ = ["DenseOptions", "Dense"]


@dataclass(frozen=True)
class DenseOptions:
    """The dense baseline has no hyperparameters of its own (its training is the profile's
    and the recipe's)."""


class Dense(PruningMethod):
    """Train the dense network; the report of a network that keeps every weight."""

    name = "baseline"
    label = "Baseline GCN"
    options_class = DenseOptions
    tc_by_design = None  # prunes nothing: the paper's "NA"
    style = ("#000000", "_")

    def prune(self, job: Job) -> PruneResult:
        if job.rate != 0.0:
            raise ValueError(f"rate: the baseline is dense, expected 0.0, got {job.rate!r}")
        return job.result(job.train())
