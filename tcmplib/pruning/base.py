"""One interface for every pruning method, and the registry that says what each method is.

A method is a subclass of :class:`PruningMethod` that declares, in one place, what the rest
of the library needs to know about it: its key (``name``), its printed ``label`` (the
paper's "Observation" column), its hyperparameters (``options_class``, a frozen dataclass),
whether it is topologically consistent by design (the paper's TC column), its plot
``style`` and its training ``phases``. :func:`register` adds it to :data:`METHODS`; tables,
figures, grids and the run notebook read everything from there, in registration order (the
paper's row order). Adding a method is one module plus one registration.

:meth:`PruningMethod.run` checks the model, builds the options and bakes any previous mask
into the weights, then hands the method a :class:`Job`: the checked arguments with the two
things every method does with them, training (:meth:`Job.train`) and reporting
(:meth:`Job.result`). Methods that train, select a mask and retrain (one-shot MP, greedy TC)
share the template :class:`TwoPhaseMethod` and only say how they select. The pruning rate
counts all weights of the network, as the paper's "# parameters" column does.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from torch import nn

from tcmplib.model import AttentionGCN
from tcmplib.pruning.masks import detach, keep_count
from tcmplib.topology import analyze, masks_from_model
from tcmplib.train import TrainConfig, TrainData, TrainHook, TrainResult, evaluate, train

__all__ = [
    "PruneReport",
    "PruneResult",
    "PruningMethod",
    "TwoPhaseMethod",
    "TwoPhaseOptions",
    "Job",
    "validate_rate",
    "register",
    "METHODS",
    "get_method",
    "method_label",
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
        """The report of :meth:`to_dict` back (e.g. a run record's ``report``).

        ``history`` replaces the one in ``data``: a run record stores the evaluated epochs
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


def phase_dir(checkpoint_dir: str | os.PathLike[str] | None, phase: str) -> Path | None:
    """The checkpoint folder of one training phase of a method (None: no checkpoints).

    A method that trains twice (dense, then the pruned network) gives each phase its own
    folder, since each is a separate :func:`tcmplib.train.train` call with its own schedule.
    On a resumed call the steps between the phases (e.g. a mask selection) run again; they
    are deterministic functions of the phase-one model, so they give the same result.
    """
    return None if checkpoint_dir is None else Path(checkpoint_dir) / phase


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
    topology = analyze(masks_from_model(model), getattr(model, "config", None))  # type: ignore[arg-type]
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


@dataclass(frozen=True)
class Job:
    """One call of a method with its arguments checked: what :meth:`PruningMethod.prune`
    works from."""

    method: str
    model: AttentionGCN
    data: TrainData
    rate: float
    train_config: TrainConfig
    options: Any  # the method's options dataclass
    progress: bool
    checkpoint_dir: str | os.PathLike[str] | None

    @property
    def keep(self) -> int:
        """The budget: weights the pruned network keeps, ``round((1 - rate) N)``."""
        return keep_count(self.model.num_weights(), self.rate)

    def train(
        self, hook: TrainHook | None = None, *, epochs: int | None = None, phase: str | None = None
    ) -> TrainResult:
        """Train the job's model under its schedule (``epochs`` of it for one ``phase`` of a
        method that trains more than once; each phase checkpoints in its own folder)."""
        config = self.train_config if epochs is None else replace(self.train_config, epochs=epochs)
        folder = self.checkpoint_dir if phase is None else phase_dir(self.checkpoint_dir, phase)
        return train(
            self.model, self.data, config, hook=hook, progress=self.progress, checkpoint_dir=folder
        )

    def result(
        self,
        trained: TrainResult,
        details: Mapping[str, float] | None = None,
        *,
        history: list[dict[str, float]] | None = None,
        wall_time_s: float | None = None,
    ) -> PruneResult:
        """The pruned model with its report, from the last training call ``trained``."""
        report = make_report(
            self.method,
            self.model,
            self.rate,
            test=trained.test,
            wall_time_s=trained.wall_time_s if wall_time_s is None else wall_time_s,
            device=trained.device,
            history=trained.history if history is None else history,
            options=self.options,
            details=details,
        )
        return PruneResult(self.model, report)


class PruningMethod(ABC):
    """A pruning method: what it is (class attributes) and how it prunes (:meth:`prune`)."""

    name: ClassVar[str]  # the key in METHODS, result file names and tables
    label: ClassVar[str]  # the printed name, as the paper's "Observation" column writes it
    options_class: ClassVar[type]  # frozen dataclass of the method's hyperparameters
    # The paper's TC column: True when consistency holds by construction; None for a method
    # that prunes nothing (the dense baseline, "NA").
    tc_by_design: ClassVar[bool | None]
    style: ClassVar[tuple[str, str]]  # (colour, matplotlib marker) in every figure
    phases: ClassVar[tuple[str, ...]] = ("train",)  # training calls, in order
    in_grids: ClassVar[bool] = True  # part of the Table 1 grid (tcmplib.sweep.GRIDS)

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
        the method's own hyperparameters (the fields of :attr:`options_class`). With
        ``checkpoint_dir`` (and ``train_config.checkpoint_every``), every training phase
        checkpoints there and an interrupted call, repeated with the same arguments on a
        freshly built model, resumes where it stopped (:func:`phase_dir`).
        """
        if not isinstance(model, AttentionGCN):
            raise TypeError(
                f"{self.name}: model: expected an AttentionGCN, got {type(model).__name__}"
            )
        opts: Any = options_from(self.options_class, options, self.name)
        detach(model, bake=True)  # start from what the model computes with, unmasked
        job = Job(self.name, model, data, rate, train_config, opts, progress, checkpoint_dir)
        return self.prune(job)

    @abstractmethod
    def prune(self, job: Job) -> PruneResult:
        """Train and prune ``job.model``; see the method's module doc."""


@dataclass(frozen=True)
class TwoPhaseOptions:
    """Hyperparameters of a train -> select -> retrain method: how the epochs are split."""

    dense_fraction: float = 0.5  # share of the epochs spent training the dense network

    def __post_init__(self) -> None:
        value = self.dense_fraction
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(
                f"{type(self).__name__}.dense_fraction: expected a number in (0, 1), got {value!r}"
            )


class TwoPhaseMethod(PruningMethod):
    """Train the dense network, select a fixed mask on its weights, retrain the kept ones.

    To compare methods at equal training cost the profile's epochs are split:
    ``dense_fraction`` of them for dense training, the rest for retraining (Adam state and
    learning rate restart with the retraining, as after any pruning step). History rows of
    the retraining are numbered after the dense ones and carry ``phase`` 0 (dense) or 1
    (retrain). The report's ``details`` give the dense and just-pruned accuracies, and
    whatever :meth:`select` adds.
    """

    options_class = TwoPhaseOptions
    phases = ("dense", "retrain")

    @abstractmethod
    def select(self, job: Job) -> dict[str, float]:
        """Attach a fixed mask of ``job.keep`` weights chosen on the trained dense
        ``job.model``; returns the selection's numbers for the report's ``details``."""

    def prune(self, job: Job) -> PruneResult:
        epochs = job.train_config.epochs
        if epochs < 2:
            raise ValueError(
                f"{self.name}: train_config.epochs: expected at least 2 (one dense, one "
                f"retraining epoch), got {epochs}"
            )
        dense_epochs = min(max(1, round(job.options.dense_fraction * epochs)), epochs - 1)
        dense = job.train(epochs=dense_epochs, phase=self.phases[0])
        selected = self.select(job)
        pruned = evaluate(job.model, job.data.x_test, job.data.y_test)  # before retraining
        retrain = job.train(epochs=epochs - dense_epochs, phase=self.phases[1])
        history = [{**row, "phase": 0.0} for row in dense.history]
        history += [
            {**row, "epoch": row["epoch"] + dense_epochs, "phase": 1.0} for row in retrain.history
        ]
        details = {
            "dense_epochs": float(dense_epochs),
            "dense_class_avg_accuracy": dense.test["class_avg_accuracy"],
            "pruned_class_avg_accuracy": pruned["class_avg_accuracy"],
            **selected,
        }
        wall_time_s = dense.wall_time_s + retrain.wall_time_s
        return job.result(retrain, details, history=history, wall_time_s=wall_time_s)


#: Every registered method by key, in registration order (the order of rows and legends).
METHODS: dict[str, type[PruningMethod]] = {}


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Add a method to :data:`METHODS` under its ``name`` (usable as a class decorator)."""
    if cls.name in METHODS:
        raise ValueError(f"register: pruning method {cls.name!r} is already registered")
    missing = [
        attr
        for attr in ("name", "label", "options_class", "tc_by_design", "style")
        if not hasattr(cls, attr)
    ]
    if missing:
        raise ValueError(f"register: {cls.__name__} does not declare {', '.join(missing)}")
    METHODS[cls.name] = cls
    return cls


def get_method(key: str) -> type[PruningMethod]:
    """The method registered as ``key``; a one-line error lists the keys."""
    if not isinstance(key, str) or key not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {key!r}")
    return METHODS[key]


def method_label(key: str) -> str:
    """The printed name of a method key; an unknown key prints as itself."""
    return METHODS[key].label if key in METHODS else key


def options_from(cls: type[OptionsT], options: Mapping[str, Any], method: str) -> OptionsT:
    """Build a method's frozen options dataclass from keyword options, naming unknown keys.

    The dataclass's own ``__post_init__`` checks the values; this only catches typos, which
    ``cls(**options)`` would report as an opaque ``TypeError``.
    """
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        expected = ", ".join(valid) if valid else "none (the method has no options)"
        raise ValueError(
            f"{method}: unknown option(s) {', '.join(map(repr, unknown))}; expected {expected}"
        )
    return cls(**options)
