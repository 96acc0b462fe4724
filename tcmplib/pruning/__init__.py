"""Pruning methods behind one entry point, :func:`prune`.

>>> result = prune("mp", model, data, 0.95, profile="book")      # doctest: +SKIP
>>> result.report.achieved_rate, result.report.percent_ac         # doctest: +SKIP

Methods (registered in :data:`METHODS` by name, in the paper's row order; each declares its
label, options, TC flag, plot style and phases, see :class:`PruningMethod`):

- ``"baseline"``: the dense network, trained and not pruned (:mod:`tcmplib.pruning.dense`);
- ``"mp"``: relaxed magnitude pruning trained on Eq. 1 (:mod:`tcmplib.pruning.mp`);
- ``"mp-oneshot"``: classic one-shot magnitude pruning with retraining (same module);
- ``"pmp"``: probabilistic magnitude pruning (:mod:`tcmplib.pruning.pmp`);
- ``"tcmp"``: topologically consistent magnitude pruning (:mod:`tcmplib.pruning.tcmp`);
- ``"greedy-tc"``: greedy topologically consistent pruning (:mod:`tcmplib.pruning.greedy`).

Every method trains with the shared trainer under the profile's schedule, prunes to exactly
``round((1 - rate) * N)`` weights of the ``N`` in the network, and returns the pruned model
(masks attached as fixed parametrizations) with a :class:`PruneReport`.

How methods are called: ``METHODS[name]().run(model, data, rate, train_config=...,
progress=..., checkpoint_dir=..., **options)``, where ``options`` are the method's own
hyperparameters (the fields of its ``options_class``, e.g. :class:`MPOptions`); unknown
names are an error. Adding a method: one module with a :class:`PruningMethod` subclass, and
one line in the registration below.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from tcmplib.profiles import Profile, get_profile
from tcmplib.pruning import dense, greedy, mp, pmp, tcmp
from tcmplib.pruning.base import (
    METHODS,
    PruneReport,
    PruneResult,
    PruningMethod,
    TwoPhaseMethod,
    get_method,
    method_label,
    register,
    validate_rate,
)
from tcmplib.pruning.mp import MPOptions, OneShotOptions
from tcmplib.pruning.pmp import PMPOptions
from tcmplib.pruning.tcmp import TCMPOptions
from tcmplib.train import DEVICES, TrainData

__all__ = [
    "prune",
    "METHODS",
    "get_method",
    "method_label",
    "PruneReport",
    "PruneResult",
    "PruningMethod",
    "TwoPhaseMethod",
    "register",
    "validate_rate",
    "MPOptions",
    "OneShotOptions",
    "PMPOptions",
    "TCMPOptions",
    "dense",
    "greedy",
    "mp",
    "pmp",
    "tcmp",
]

# The registration, in the paper's row order (tables, legends and grids follow it).
for _method in (dense.Dense, mp.RelaxedMP, greedy.GreedyTC, tcmp.TCMP, pmp.PMP, mp.OneShotMP):
    register(_method)


def _resolve_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, str):
        return get_profile(profile)
    raise ValueError(f"profile: expected a profile name or a Profile, got {profile!r}")


def prune(
    method: str,
    model: nn.Module,
    data: TrainData,
    rate: float,
    *,
    profile: str | Profile = "book",
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    train_overrides: dict[str, Any] | None = None,
    **options: Any,
) -> PruneResult:
    """Prune ``model`` (in place) to ``rate`` with ``method``, training on ``data``.

    ``rate`` is the fraction of all weights removed, in [0, 1). ``profile`` (a name from
    :data:`tcmplib.profiles.PROFILES` or a :class:`Profile`) sets the epochs; ``seed`` seeds
    the training, so the same call gives the same report on the same machine. ``options``
    go to the method (see its options dataclass). With ``checkpoint_dir`` (the profile must
    checkpoint, e.g. ``"paper"``) the run checkpoints there, and the same call repeated after
    an interruption, on a model built the same way, resumes from the last checkpoint.
    ``train_overrides`` replace fields of the profile's training config (the recipe's, e.g.
    ``weight_decay``; see :meth:`tcmplib.recipe.Recipe.train_overrides`).
    """
    cls = get_method(method)
    rate = validate_rate(rate)
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {DEVICES}, got {device!r}")
    config = _resolve_profile(profile).train_config(
        seed=seed, device=device, **(train_overrides or {})
    )
    if checkpoint_dir is not None and config.checkpoint_every is None:
        raise ValueError(
            f"checkpoint_dir: given, but profile {_resolve_profile(profile).name!r} does not "
            "checkpoint (checkpoint_every is None)"
        )
    return cls().run(
        model,
        data,
        rate,
        train_config=config,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        **options,
    )
