"""Run records for tests: real :class:`tcmplib.records.RunRecord` JSON, with chosen numbers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tcmplib.pruning import PruneReport
from tcmplib.records import Provenance, RunRecord, TensorRow, identity_hash
from tcmplib.run import RunConfig


def make_record(
    method: str,
    rate: float,
    seed: int = 0,
    *,
    dataset: str = "synthetic",
    profile: str = "book",
    recipe: str = "as-written",
    history: list[dict[str, float]] | None = None,
    tensors: list[dict[str, Any]] | None = None,
    provenance: dict[str, Any] | None = None,
    code: str | None = None,
    options: dict[str, Any] | None = None,
    **report: Any,
) -> dict[str, Any]:
    """The JSON of a run record of (method, rate, seed) with method ``options`` set away
    from their defaults; ``report`` overrides report fields."""
    config = RunConfig(
        dataset=dataset, method=method, rate=rate, seed=seed, profile=profile,
        recipe=recipe, options=options or {},
    )  # fmt: skip
    identity = config.identity()
    fields: dict[str, Any] = {
        "method": method,
        "target_rate": rate,
        "achieved_rate": rate,
        "kept_weights": 1000,
        "total_weights": 20000,
        "percent_ac": 100.0,
        "class_avg_accuracy": 0.5,
        "accuracy": 0.5,
        "wall_time_s": 2.5,
        "device": "cpu (2 threads)",
        "options": identity["options"],
        "details": {},
    }
    fields.update(report)
    prov = Provenance(
        git_commit="abc123", git_dirty=False, device=fields["device"], cpu=None,
        cpu_capability=None, torch="2", tcmplib="0.1.0", python="3.11", wall_time_s=3.0,
        date="2026-12-01T00:00:00+00:00", resumed=False,
    )  # fmt: skip
    record = RunRecord(
        config=config,
        identity=identity,
        hash=identity_hash(identity, code),
        report=PruneReport(**fields, history=history or [{"epoch": 1, "loss": 1.0}]),
        tensors=None if tensors is None else tuple(TensorRow(**row) for row in tensors),
        provenance=replace(prov, **(provenance or {})),
        code=code,
    )
    return record.to_json()
