"""Run profiles: how long to train, in one place.

Every chapter, test and command-line run picks one of three profiles instead of hard-coding
epoch counts:

- ``smoke``: a few epochs, seconds of CPU time. Continuous integration runs the chapters with
  it to check that they execute; its numbers mean nothing.
- ``book``: the default when the book is built on a laptop CPU. One baseline run stays around
  a minute and a half on 2 CPU cores, so a chapter with several runs still builds in minutes.
  Its accuracies are those of a short schedule, not the paper's.
- ``paper``: the paper's schedule (Section 5): 2,700 full-batch epochs. Meant for a GPU, or
  for ~25 minutes per run on a CPU.

Chapters read the profile from the environment variable ``TCMP_PROFILE`` (see
:func:`profile_from_env`), so the same notebook serves all three uses unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily below: the CLI lists profiles without loading torch
    from tcmplib.train import TrainConfig

__all__ = ["Profile", "PROFILES", "PROFILE_ENV", "get_profile", "profile_from_env"]

#: The environment variable that chapters and scripts read the profile name from.
PROFILE_ENV = "TCMP_PROFILE"


@dataclass(frozen=True)
class Profile:
    """What differs between a smoke test, a book build and a paper-scale run."""

    name: str
    epochs: int
    eval_every: int  # test-set evaluation period in epochs (the final epoch is always evaluated)
    checkpoint_every: int | None  # None: no checkpoints (short runs gain nothing from them)
    description: str

    def train_config(self, seed: int = 0, device: str = "auto", **overrides: object) -> TrainConfig:
        """The training configuration of this profile; ``overrides`` replace any other field."""
        from tcmplib.train import TrainConfig

        fields: dict[str, object] = {
            "epochs": self.epochs,
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
            "seed": seed,
            "device": device,
        }
        fields.update(overrides)
        return TrainConfig(**fields)  # type: ignore[arg-type]


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("smoke", epochs=4, eval_every=2, checkpoint_every=None,
                description="a few epochs to check that everything runs; the numbers mean nothing"),
        Profile("book", epochs=150, eval_every=10, checkpoint_every=None,
                description="a short schedule: about a minute and a half per run on 2 CPU cores"),
        Profile("paper", epochs=2700, eval_every=50, checkpoint_every=100,
                description="the paper's schedule: 2,700 full-batch epochs (Section 5)"),
    )
}  # fmt: skip


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a clear error lists the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        valid = ", ".join(sorted(PROFILES))
        raise ValueError(f"profile: expected one of {valid}, got {name!r}") from None


def profile_from_env(default: str = "book") -> Profile:
    """The profile named by ``$TCMP_PROFILE``; ``default`` when it is unset or empty."""
    name = os.environ.get(PROFILE_ENV, "").strip() or default
    try:
        return get_profile(name)
    except ValueError as err:
        raise ValueError(f"{PROFILE_ENV}: {err}") from None
