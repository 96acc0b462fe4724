"""One interface for every pruning method: ``prune(method, model, data, rate, ...)``.

A method trains the model with the shared trainer (:func:`tcmplib.train.train`) through a
:class:`~tcmplib.train.TrainHook` (masks as parametrizations, extra loss terms, annealing)
and returns the pruned model with a :class:`PruneReport`. The pruning rate counts all
weights of the network, as the paper's "# parameters" column does.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from torch import nn

__all__ = ["PruneReport", "PruneResult", "PruningMethod", "validate_rate", "register", "METHODS"]


def validate_rate(rate: float) -> float:
    """A pruning rate is a fraction of removed weights in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise ValueError(f"rate: expected a number in [0, 1), got {rate!r}")
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"rate: expected a fraction in [0, 1) (e.g. 0.95 for 95%), got {rate!r}")
    return float(rate)


@dataclass(frozen=True)
class PruneReport:
    """What a pruning run measured. Rates are fractions; accuracies are in [0, 1]."""

    method: str
    target_rate: float
    achieved_rate: float
    kept_weights: int
    total_weights: int
    percent_ac: float  # share of kept connections that are accessible and co-accessible, in %
    class_avg_accuracy: float
    accuracy: float
    wall_time_s: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def topologically_consistent(self) -> bool:
        return self.percent_ac >= 100.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["topologically_consistent"] = self.topologically_consistent
        return data


@dataclass
class PruneResult:
    model: nn.Module
    report: PruneReport


class PruningMethod(ABC):
    """A pruning method; subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, model: nn.Module, data: Any, rate: float, **kwargs: Any) -> PruneResult:
        """Prune ``model`` to ``rate`` (already validated) while training on ``data``."""


METHODS: dict[str, type[PruningMethod]] = {}


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator adding a method to :data:`METHODS` under its ``name``."""
    if cls.name in METHODS:
        raise ValueError(f"register: pruning method {cls.name!r} is already registered")
    METHODS[cls.name] = cls
    return cls
