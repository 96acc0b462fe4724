"""The run record: what one run of :func:`tcmplib.run.run_config` leaves behind, written and
read here and nowhere else.

A record is a :class:`RunRecord` (typed dataclasses, one JSON file per run, format
:data:`RECORD_FORMAT`)::

    <results>/<method>_rate<rate>_seed<seed>_<hash>.json
    <results>/networks/<same name>.json          the compact network's structure, no weight

It holds the run's configuration as asked (``config``: data set, method, rate, seed,
profile, recipe name, the method options set away from their defaults), its full
``identity`` (everything that can change its numbers: those fields, every option of the
method and of the recipe with its defaults, the model's configuration and the profile's full
training schedule; :meth:`tcmplib.run.RunConfig.identity`) and the ``hash`` of that
identity, which names the file; then the method's ``report``, the learning curve at the
evaluated epochs (``history``), where the kept weights sit tensor by ``tensors`` and the
``provenance`` (commit, machine, versions, wall time, date).

``code`` is empty for a record that the library's code computes as it is now. A record
computed by code the library no longer has (an earlier version of a method, kept as
evidence) says which in ``code``; the text is part of its hash, so that such a record never
passes for a run of the current configuration.

Reading is strict: a file of another format, or one with a missing field or a field of the
wrong type, is a one-line ``ValueError`` naming the file and the field. Records of the
earlier format 1 are refused with the command that converts them
(``scripts/migrate_results.py``), never read silently.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcmplib.pruning.base import PruneReport
from tcmplib.train import atomic_write

if TYPE_CHECKING:
    from tcmplib.run import RunConfig

__all__ = [
    "RECORD_FORMAT",
    "RECORD_KIND",
    "STRUCTURES_FOLDER",
    "Provenance",
    "TensorRow",
    "RunRecord",
    "identity_hash",
    "record_path",
    "structure_path",
    "write_record",
    "read_record",
    "read_folder",
]

#: Version of the record layout (1: the untyped result files before it, see the module doc).
RECORD_FORMAT = 2
#: The ``kind`` of every run record (a results folder may hold other JSON, e.g. CV folds).
RECORD_KIND = "tcmp-run"
#: Subfolder of a results folder with each run's compact-network structure (no weights).
STRUCTURES_FOLDER = "networks"


def identity_hash(identity: Mapping[str, Any], code: str | None = None) -> str:
    """12 hex digits naming a run: SHA-256 of its identity as sorted JSON (and of ``code``,
    for a record computed by code the library no longer has)."""
    key: dict[str, Any] = {"identity": identity}
    if code:
        key["code"] = code
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Provenance:
    """Where, when and with what a run was computed. ``None``: not recorded (records made
    before the field existed)."""

    git_commit: str | None
    git_dirty: bool | None
    device: str
    cpu: str | None
    cpu_capability: str | None
    torch: str
    tcmplib: str
    python: str
    wall_time_s: float  # this call's, not the training time of a resumed run
    date: str
    resumed: bool | None


@dataclass(frozen=True)
class TensorRow:
    """One weight tensor of the final network: its size, kept weights, kept A-C weights."""

    tensor: str
    weights: int
    kept: int
    effective: int


@dataclass(frozen=True)
class RunRecord:
    """One run: configuration, identity and hash, report (with history), tensors, provenance."""

    config: RunConfig
    identity: dict[str, Any]
    hash: str
    report: PruneReport  # its history is the evaluated epochs of the run
    tensors: tuple[TensorRow, ...] | None  # None: not recorded by the run
    provenance: Provenance
    code: str | None = None  # see the module doc

    @property
    def name(self) -> str:
        return self.config.file_name(self.hash)

    @property
    def history(self) -> list[dict[str, float]]:
        return self.report.history

    def to_json(self) -> dict[str, Any]:
        report = self.report.to_dict()
        history = report.pop("history")
        return {
            "format": RECORD_FORMAT,
            "kind": RECORD_KIND,
            "name": self.name,
            "hash": self.hash,
            "code": self.code,
            "config": self.config.to_json(),
            "identity": self.identity,
            "report": report,
            "history": history,
            "tensors": None if self.tensors is None else [asdict(t) for t in self.tensors],
            "provenance": asdict(self.provenance),
        }

    @classmethod
    def from_json(cls, data: Any, path: str | os.PathLike[str]) -> RunRecord:
        """The record of :meth:`to_json`, every field checked (errors name ``path``)."""
        from tcmplib.run import RunConfig

        read = _Reader(Path(path))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        found = data.get("format")
        if found == 1 or (found is None and "config_hash" in data):
            raise ValueError(
                f"{path}: a format-1 result file; convert its folder with "
                f"`python scripts/migrate_results.py {Path(path).parent}`"
            )
        if found != RECORD_FORMAT or data.get("kind") != RECORD_KIND:
            raise ValueError(
                f"{path}: expected a run record (format {RECORD_FORMAT}, kind {RECORD_KIND!r}), "
                f"got format {found!r}, kind {data.get('kind')!r}"
            )
        try:
            config = RunConfig.from_json(read.field(data, "config", dict))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: field 'config': {err}") from None
        report_data = read.field(data, "report", dict)
        report = PruneReport(
            **{key: read.field(report_data, key, kind, "report") for key, kind in _REPORT.items()},
            history=read.rows(data, "history"),
        )
        tensors = data.get("tensors", _MISSING)
        if tensors is _MISSING:
            read.missing("tensors")
        record = cls(
            config=config,
            identity=read.field(data, "identity", dict),
            hash=read.field(data, "hash", str),
            report=report,
            tensors=None if tensors is None else read.tensors(tensors),
            provenance=read.provenance(read.field(data, "provenance", dict)),
            code=read.field(data, "code", (str, type(None))),
        )
        if identity_hash(record.identity, record.code) != record.hash:
            raise ValueError(
                f"{path}: field 'hash': {record.hash!r} is not the hash of the record's "
                f"identity ({identity_hash(record.identity, record.code)!r}); the file was edited"
            )
        if data.get("name") != record.name:
            raise ValueError(f"{path}: field 'name': expected {record.name!r}")
        return record


_MISSING = object()
# Report fields and their JSON types (integers are numbers too where a float is expected).
_REPORT: dict[str, Any] = {
    "method": str,
    "target_rate": numbers.Real,
    "achieved_rate": numbers.Real,
    "kept_weights": numbers.Integral,
    "total_weights": numbers.Integral,
    "percent_ac": numbers.Real,
    "class_avg_accuracy": numbers.Real,
    "accuracy": numbers.Real,
    "wall_time_s": numbers.Real,
    "device": str,
    "options": dict,
    "details": dict,
}
_PROVENANCE: dict[str, Any] = {
    "git_commit": (str, type(None)),
    "git_dirty": (bool, type(None)),
    "device": str,
    "cpu": (str, type(None)),
    "cpu_capability": (str, type(None)),
    "torch": str,
    "tcmplib": str,
    "python": str,
    "wall_time_s": numbers.Real,
    "date": str,
    "resumed": (bool, type(None)),
}
_TENSOR: dict[str, Any] = {
    "tensor": str,
    "weights": numbers.Integral,
    "kept": numbers.Integral,
    "effective": numbers.Integral,
}


class _Reader:
    """Checked access to the fields of one file, with errors that name it and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def missing(self, dotted: str) -> None:
        raise ValueError(
            f"{self.path}: missing field {dotted!r} (a run record of format {RECORD_FORMAT} has it)"
        )

    def field(self, data: Mapping[str, Any], key: str, kind: Any, section: str = "") -> Any:
        dotted = f"{section}.{key}" if section else key
        if key not in data:
            self.missing(dotted)
        value = data[key]
        # A boolean is a JSON true/false, never a number here.
        wrong = isinstance(value, bool) and bool not in _kinds(kind)
        if wrong or not isinstance(value, kind):
            raise ValueError(f"{self.path}: field {dotted!r}: unexpected value {value!r}")
        return value

    def rows(self, data: Mapping[str, Any], key: str) -> list[dict[str, float]]:
        rows = self.field(data, key, list)
        if not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{self.path}: field {key!r}: expected a list of objects")
        return rows

    def tensors(self, value: Any) -> tuple[TensorRow, ...]:
        if not isinstance(value, list):
            raise ValueError(f"{self.path}: field 'tensors': expected a list or null")
        rows = []
        for i, row in enumerate(value):
            if not isinstance(row, dict):
                raise ValueError(f"{self.path}: field 'tensors[{i}]': expected an object")
            rows.append(
                TensorRow(**{k: self.field(row, k, t, f"tensors[{i}]") for k, t in _TENSOR.items()})
            )
        return tuple(rows)

    def provenance(self, data: Mapping[str, Any]) -> Provenance:
        return Provenance(
            **{k: self.field(data, k, t, "provenance") for k, t in _PROVENANCE.items()}
        )


def _kinds(kind: Any) -> tuple[Any, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def record_path(results_dir: str | os.PathLike[str], name: str) -> Path:
    """Where the record of the run called ``name`` goes: ``<results>/<name>.json``."""
    return Path(results_dir) / f"{name}.json"


def structure_path(results_dir: str | os.PathLike[str], name: str) -> Path:
    """Where a run's compact-network structure goes (:func:`tcmplib.compact.save_structure`):
    ``<results>/networks/<run name>.json``, committed with the record."""
    return Path(results_dir) / STRUCTURES_FOLDER / f"{name}.json"


def write_record(record: RunRecord, path: str | os.PathLike[str]) -> Path:
    """Write ``record`` to ``path`` atomically (a reader never sees half a file)."""
    text = json.dumps(record.to_json(), indent=1) + "\n"
    return atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def read_record(path: str | os.PathLike[str]) -> RunRecord:
    """The record in ``path``; a one-line ValueError names the file and what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        detail = " ".join(str(err).split())
        raise ValueError(f"{path}: expected a JSON run record, unreadable ({detail})") from None
    return RunRecord.from_json(data, path)


def read_folder(results_dir: str | os.PathLike[str]) -> list[tuple[Path, RunRecord]]:
    """Every record directly in ``results_dir`` (``*.json``, by file name), with its path.

    A bad file stops the load with an error naming it: a silently skipped run would bias the
    seed averages without anyone noticing. Subfolders (structures, diagnostics) are not read.
    """
    folder = Path(results_dir)
    if not folder.is_dir():
        raise ValueError(f"results_dir: expected an existing folder of run records, got '{folder}'")
    paths = sorted(path for path in folder.glob("*.json") if path.is_file())
    return [(path, read_record(path)) for path in paths]
