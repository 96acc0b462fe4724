"""One interface for every pruning method: ``prune(method, model, data, rate, ...)``.

A method trains the model with the shared trainer (:func:`tcmplib.train.train`) through a
:class:`~tcmplib.train.TrainHook` (masks as parametrizations, extra loss terms, annealing)
and returns the pruned model with a :class:`PruneReport`. The pruning rate counts all
weights of the network, as the paper's "# parameters" column does.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from torch import nn

from tcmplib.topology import analyze, masks_from_model
from tcmplib.train import TrainConfig, TrainData

__all__ = [
    "PruneReport",
    "PruneResult",
    "PruningMethod",
    "validate_rate",
    "register",
    "METHODS",
    "options_from",
    "make_report",
    "phase_dir",
]

OptionsT = TypeVar("OptionsT")


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
    # Method-specific end-of-run numbers (e.g. PMP's rate at the prior's threshold).
    details: dict[str, float] = field(default_factory=dict)

    @property
    def topologically_consistent(self) -> bool:
        return self.percent_ac >= 100.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["topologically_consistent"] = self.topologically_consistent
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], history: list[dict[str, float]] | None = None
    ) -> PruneReport:
        """The report of :meth:`to_dict` back (e.g. a sweep result's ``report``).

        ``history`` replaces the one in ``data``: a result file stores the evaluated epochs
        next to the report rather than inside it.
        """
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data and name != "history"]
        if missing:
            raise ValueError(f"report: expected the keys {missing}")
        values = {name: data[name] for name in names if name in data}
        if history is not None:
            values["history"] = history
        return cls(**values)


@dataclass
class PruneResult:
    model: nn.Module
    report: PruneReport


class PruningMethod(ABC):
    """A pruning method; subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str]
    #: Bumped whenever a change of the method changes its results. Part of a sweep run's hash
    #: from revision 2 on (revision 1 is hashed without it, so the results of methods never
    #: revised keep their file names), so a revised method never reuses stale results.
    revision: ClassVar[int] = 1

    @abstractmethod
    def run(
        self,
        model: nn.Module,
        data: TrainData,
        rate: float,
        *,
        train_config: TrainConfig,
        progress: bool = True,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> PruneResult:
        """Prune ``model`` to ``rate`` (already validated) while training on ``data``.

        ``train_config`` is the shared trainer's schedule (from the profile); ``options`` are
        the method's own hyperparameters (the fields of its options dataclass). With
        ``checkpoint_dir`` (and ``train_config.checkpoint_every``), every training phase
        checkpoints there and an interrupted call, repeated with the same arguments on a
        freshly built model, resumes where it stopped (:func:`phase_dir`).
        """


def phase_dir(checkpoint_dir: str | os.PathLike[str] | None, phase: str) -> Path | None:
    """The checkpoint folder of one training phase of a method (None: no checkpoints).

    A method that trains twice (dense, then the pruned network) gives each phase its own
    folder, since each is a separate :func:`tcmplib.train.train` call with its own schedule.
    On a resumed call the steps between the phases (e.g. a mask selection) run again; they
    are deterministic functions of the phase-one model, so they give the same result.
    """
    return None if checkpoint_dir is None else Path(checkpoint_dir) / phase


METHODS: dict[str, type[PruningMethod]] = {}


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator adding a method to :data:`METHODS` under its ``name``."""
    if cls.name in METHODS:
        raise ValueError(f"register: pruning method {cls.name!r} is already registered")
    METHODS[cls.name] = cls
    return cls


def options_from(cls: type[OptionsT], options: Mapping[str, Any], method: str) -> OptionsT:
    """Build a method's frozen options dataclass from keyword options, naming unknown keys.

    The dataclass's own ``__post_init__`` checks the values; this only catches typos, which
    ``cls(**options)`` would report as an opaque ``TypeError``.
    """
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"{method}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(valid)}"
        )
    return cls(**options)


def make_report(
    method: str,
    model: nn.Module,
    target_rate: float,
    *,
    test: Mapping[str, float],
    wall_time_s: float,
    device: str,
    history: list[dict[str, float]],
    options: Any,
    details: Mapping[str, float] | None = None,
) -> PruneReport:
    """The report of a finished run: counts and % A-C read from what the model computes with.

    Kept weights are the nonzero effective weights (``getattr(model, name)``, masks applied),
    so the achieved rate is measured, not taken from the method's own bookkeeping.
    ``options`` is the method's options dataclass (stored as a plain dict).
    """
    topology = analyze(masks_from_model(model))  # type: ignore[arg-type]
    total = topology.total_weights
    kept = topology.total_kept
    return PruneReport(
        method=method,
        target_rate=target_rate,
        achieved_rate=1.0 - kept / total,
        kept_weights=kept,
        total_weights=total,
        percent_ac=topology.percent_ac,
        class_avg_accuracy=float(test["class_avg_accuracy"]),
        accuracy=float(test["accuracy"]),
        wall_time_s=wall_time_s,
        device=device,
        history=history,
        options=asdict(options),
        details=dict(details or {}),
    )
