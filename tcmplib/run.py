"""One run: a frozen configuration, its identity and hash, and the function that computes it.

A :class:`RunConfig` names what one run computes: data set, method, pruning rate, seed,
profile (the training schedule), training recipe and any method option set away from its
default. Its :meth:`~RunConfig.identity` resolves that into everything that can change the
run's numbers:

- ``dataset``, ``method``, ``rate``, ``seed``, ``profile``;
- ``options``: every field of the method's options dataclass, defaults included
  (:attr:`tcmplib.pruning.PruningMethod.options_class`);
- ``recipe``: every option of the training recipe, defaults included
  (:class:`tcmplib.recipe.Recipe`; its name is left out: two names for the same options are
  one run);
- ``model``: the network's configuration (:class:`tcmplib.model.GCNConfig`) apart from the
  sizes the data set fixes (joints, input features, classes), which follow from the data
  set and the recipe above;
- ``train``: the profile's full training schedule with the recipe's overrides
  (:class:`tcmplib.train.TrainConfig`), without the device.

Its :attr:`~RunConfig.hash` (SHA-256 of the identity, 12 hex digits;
:func:`tcmplib.records.identity_hash`) names the run's record, so that a change of any
default anywhere in it gives a new name and a sweep never reuses a record computed under the
old value. There is no revision number to bump by hand. The device is not in it: a run on a
GPU and one on a CPU answer the same question (the provenance says where each ran). The code
is not in it either: a change of a method that changes its numbers without changing an
option must add an option (with the old behaviour one setting away) or leave the old
records behind (``results/fpha-paper-superseded`` says how).

:func:`run_config` computes a config in this process and writes its record
(:mod:`tcmplib.records`); the sweep (:mod:`tcmplib.sweep`) calls it through the run
notebook, ``tcmp run`` directly. A run of a profile that checkpoints (``paper``: every 100
epochs) resumes within itself: its checkpoints live in ``<checkpoints_dir>/<run name>/``
(outside the results, like the models: they hold weights trained on the data), so a run
killed in the middle of 2,700 epochs loses at most 100 of them. A run resumes only with the
code, torch, device and CPU kernels it started with (:func:`resume_key`), since on a CPU
only those repeat an uninterrupted run bit for bit; its folder is removed once the record is
written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tcmplib.records import (
    Provenance,
    RunRecord,
    TensorRow,
    identity_hash,
    record_path,
    structure_path,
    write_record,
)

__all__ = [
    "DATASETS",
    "DATA_SIZES",
    "RunConfig",
    "parse_option",
    "run_config",
    "execute",
    "git_state",
    "provenance",
    "cpu_name",
    "resume_key",
    "checkpointed_epochs",
]

DATASETS = ("synthetic", "fpha")

#: Fields of :class:`tcmplib.model.GCNConfig` that the data set fixes (joints, input
#: features per joint, classes): functions of the data set and recipe, both in the identity.
DATA_SIZES = ("nodes", "d_in", "classes")

#: In a run's checkpoint folder: the code and machine the run started on.
STARTED_FILE = "started.json"

_SHORT_FIELDS = ("dataset", "method", "rate", "seed", "profile", "recipe")


def identity_options(options: Any, recipe: Any = None) -> dict[str, Any]:
    """A method's options as its run identity holds them: every field, except one added after
    records existed, at the value those records ran with, so that their names stay valid:
    ``metadata={"identity": "unless-default"}`` leaves the field out at its default,
    ``metadata={"identity": "unless", "unless": value}`` at ``value`` (a new default that
    changed the method: the old records keep their names and stay one setting away).
    ``metadata={"inert_without": name}`` also leaves the field out when the ``recipe``'s
    option ``name`` is zero: it cannot change a number then (e.g. what weight decay acts on,
    under a recipe without weight decay), so the records run without it keep their names."""
    values = asdict(options)
    for item in fields(options):
        kind = item.metadata.get("identity")
        inert_without = item.metadata.get("inert_without")
        if kind == "unless-default" and values[item.name] == item.default:
            del values[item.name]
        elif kind == "unless" and values[item.name] == item.metadata["unless"]:
            del values[item.name]
        elif inert_without and recipe is not None and not getattr(recipe, inert_without):
            del values[item.name]
    return values


@dataclass(frozen=True)
class RunConfig:
    """What one run computes. ``method="baseline"`` trains the dense network (rate 0).

    ``options`` are the method's options set away from their defaults, as (name, value)
    pairs (a mapping is accepted and sorted); every other option takes its default, and the
    identity holds them all.
    """

    dataset: str = "synthetic"
    method: str = "baseline"
    rate: float = 0.0
    seed: int = 0
    profile: str = "book"
    recipe: str = "as-written"  # a name from tcmplib.recipe.RECIPES
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        from tcmplib.profiles import get_profile
        from tcmplib.pruning import get_method, validate_rate
        from tcmplib.recipe import get_recipe

        if self.dataset not in DATASETS:
            raise ValueError(
                f"dataset: expected one of {', '.join(DATASETS)}, got {self.dataset!r}"
            )
        method = get_method(self.method)
        object.__setattr__(self, "rate", validate_rate(self.rate))
        if method.tc_by_design is None and self.rate != 0.0:
            raise ValueError(f"rate: the {self.method} is dense, expected 0.0, got {self.rate!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {self.seed!r}")
        get_profile(self.profile)  # raises with the valid names
        get_recipe(self.recipe)
        pairs = dict(self.options) if self.options else {}
        object.__setattr__(self, "options", tuple(sorted(pairs.items())))
        self.method_options()  # raises on an unknown name or a bad value

    # -- what the identity is made of ------------------------------------------------------

    def method_options(self) -> Any:
        """The method's options dataclass, with ``options`` set and every other default."""
        from tcmplib.pruning.base import get_method, options_from

        return options_from(get_method(self.method).options_class, dict(self.options), self.method)

    def recipe_options(self) -> Any:
        """The :class:`tcmplib.recipe.Recipe` this run trains under."""
        from tcmplib.recipe import get_recipe

        return get_recipe(self.recipe)

    def model_config(self) -> dict[str, Any]:
        """The network's configuration under the recipe, without :data:`DATA_SIZES`."""
        from tcmplib.model import GCNConfig

        # The recipe builds a GCNConfig from a data set; the sizes it reads from it are
        # dropped, so any stand-in sizes do (the defaults' are valid for every option).
        sizes = SimpleNamespace(
            num_nodes=GCNConfig.nodes, d_in=GCNConfig.d_in, num_classes=GCNConfig.classes
        )
        return model_identity(self.recipe_options().gcn_config(sizes))

    def train_schedule(self) -> dict[str, Any]:
        """The profile's training config (seeded, with the recipe's optimizer settings),
        without the device."""
        from tcmplib.profiles import get_profile

        overrides = self.recipe_options().train_overrides()
        schedule = identity_options(
            get_profile(self.profile).train_config(seed=self.seed, **overrides)
        )
        schedule.pop("device")
        return schedule

    def identity(self) -> dict[str, Any]:
        """Everything that can change the run's numbers (see the module doc)."""
        return {
            "dataset": self.dataset,
            "method": self.method,
            "rate": self.rate,
            "seed": self.seed,
            "profile": self.profile,
            "options": identity_options(self.method_options(), self.recipe_options()),
            "recipe": identity_options(self.recipe_options()),
            "model": self.model_config(),
            "train": self.train_schedule(),
        }

    @property
    def hash(self) -> str:
        """12 hex digits naming the run: the hash of :meth:`identity`."""
        return identity_hash(self.identity())

    def file_name(self, hash_: str) -> str:
        return f"{self.method}_rate{self.rate:.4f}_seed{self.seed}_{hash_}"

    @property
    def name(self) -> str:
        return self.file_name(self.hash)

    # -- as JSON (the record's ``config``) ---------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {**{key: getattr(self, key) for key in _SHORT_FIELDS}, "options": dict(self.options)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        return cls(**{name: data[name] for name in names})

    def with_options(self, assignments: list[str]) -> RunConfig:
        """This config with method options set from ``key=value`` texts (``tcmp run --set``)."""
        from dataclasses import replace

        values = dict(self.options)
        defaults = asdict(self.method_options())
        for text in assignments:
            key, value = parse_option(text, defaults, self.method)
            values[key] = value
        return replace(self, options=tuple(values.items()))


def model_identity(gcn: Any) -> dict[str, Any]:
    """A :class:`~tcmplib.model.GCNConfig` as the identity holds it: without the sizes that
    the data set fixes."""
    identity = {key: value for key, value in asdict(gcn).items() if key not in DATA_SIZES}
    if identity.get("values") == "shared":  # came after runs were recorded (see Recipe.values)
        del identity["values"]
    elif identity.get("values") == "per-head":
        # Filters per head follow from the data's sizes (tcmplib.model.per_head_channels).
        del identity["channels"]
    if identity.get("attention") == "softmax":  # likewise (see Recipe.attention)
        del identity["attention"]
    return identity


def parse_option(text: str, defaults: dict[str, Any], method: str) -> tuple[str, Any]:
    """``key=value`` as a method option: the value parsed as JSON (``0.5``, ``true``,
    ``null``, ``"laplace"``), else taken as a string; an unknown key names the valid ones."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set {text!r}: expected key=value")
    if key not in defaults:
        valid = ", ".join(defaults) or "none (the method has no options)"
        raise ValueError(f"--set {key}: {method} has no such option; expected one of {valid}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw.strip()
    if isinstance(defaults[key], float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # 2 and 2.0 are one option value, and one hash
    return key, value


# -------------------------------------------------------------------------------------------
# Provenance and resumption
# -------------------------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    """Output of a git command in the source tree of tcmplib, or None outside a checkout."""
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "git_commit": commit or "unknown",
        "git_dirty": bool(status) if status is not None else None,
    }


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (``/proc/cpuinfo``), else the platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def resume_key(device: str) -> dict[str, Any]:
    """What must not change between the start of a run and a resumption of it.

    ``device`` is the trainer's device string (on a CPU it names the thread count, which
    changes the order of float sums). ``tcmplib_tree`` is git's hash of the package's source
    tree, so a commit that touches only results or chapters does not block a resumption.
    """
    import torch

    return {
        "tcmplib_tree": _git("rev-parse", "HEAD:./") or "unknown",
        "torch": torch.__version__,
        "device": device,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _device_string(device: str) -> str:
    from tcmplib.train import describe_device, resolve_device

    return describe_device(resolve_device(device))


def _prepare_checkpoints(run_dir: Path, device: str) -> dict[str, Any]:
    """The git state the run started with, after checking that it may resume here.

    A fresh run records its git state and :func:`resume_key` in ``started.json``; a run
    whose folder already holds one resumes only if the key is unchanged.
    """
    from tcmplib.train import atomic_write

    key = resume_key(_device_string(device))
    started_file = run_dir / STARTED_FILE
    if started_file.is_file():
        try:
            started = json.loads(started_file.read_text())
            before, git = started["resume_key"], started["git"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"checkpoints: {started_file} is not a run's start record ({err}); "
                "remove the folder to start the run over"
            ) from None
        changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in key.items() if before.get(k) != v]
        if changed:
            raise ValueError(
                f"checkpoints: {run_dir} was started with other code or on another machine "
                f"({'; '.join(changed)}); resume it there, or remove the folder to start over"
            )
        return dict(git)
    git = git_state()
    text = json.dumps({"git": git, "resume_key": key}, indent=1) + "\n"
    atomic_write(started_file, lambda handle: handle.write(text.encode()))
    return git


def checkpointed_epochs(checkpoints_dir: str | os.PathLike[str], config: RunConfig) -> int | None:
    """Epochs an unfinished run has behind it in its checkpoints (None: nothing to resume).

    Read from the checkpoint file names (``ckpt-<epoch>.pt``), summed over the training
    phases of a two-phase method, without loading a checkpoint.
    """
    run_dir = Path(checkpoints_dir) / config.name
    if not (run_dir / STARTED_FILE).is_file():
        return None
    epochs = 0
    for checkpoint in run_dir.glob("**/ckpt-[0-9][0-9][0-9][0-9][0-9][0-9].pt"):
        epochs += int(checkpoint.stem.removeprefix("ckpt-"))
    return epochs


def provenance(
    device: str, wall_time_s: float, git: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Where, when and with what a result was computed.

    ``git`` is :func:`git_state` taken when the run started (a paper-scale run lasts long
    enough for the checkout to move on); by default it is taken now.
    """
    import torch

    from tcmplib import __version__

    return {
        **(git if git is not None else git_state()),
        "device": device,
        # Float results depend on the kernels torch picks for this CPU (AVX2, AVX512, ...):
        # two machines can train the same seed to slightly different numbers.
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "tcmplib": __version__,
        "python": platform.python_version(),
        "wall_time_s": round(wall_time_s, 3),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _evaluated_rows(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """History rows with test metrics: the learning curve at a size fit for committing."""
    return [dict(row) for row in history if "test_class_avg_accuracy" in row]


# -------------------------------------------------------------------------------------------
# Computing one run
# -------------------------------------------------------------------------------------------


def execute(
    config: RunConfig,
    *,
    device: str = "auto",
    fpha_root: str | os.PathLike[str] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    checkpoints_dir: str | os.PathLike[str] | None = None,
    structures_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> RunRecord:
    """Train and prune ``config`` in this process; returns its record (written by the caller).

    ``structures_dir``: save the compact network's structure there as
    ``networks/<run name>.json`` (the results folder, before the record is written, so that
    a record on disk always has its structure beside it). See :func:`run_config`.
    """
    import torch  # noqa: F401  (fail early here rather than deep in a method)

    from tcmplib.compact import compact_model, save_compact, save_structure, structure_of
    from tcmplib.profiles import get_profile
    from tcmplib.pruning import prune
    from tcmplib.recipe import load_recipe_data
    from tcmplib.topology import analyze, masks_from_model
    from tcmplib.train import build_model

    start = time.perf_counter()
    profile = get_profile(config.profile)
    run_dir = (
        Path(checkpoints_dir) / config.name
        if checkpoints_dir is not None and profile.checkpoint_every is not None
        else None
    )
    resumed = run_dir is not None and (run_dir / STARTED_FILE).is_file()
    # The code that trains, not the checkout at the end of a long run (or of a resumption).
    source = _prepare_checkpoints(run_dir, device) if run_dir is not None else git_state()
    recipe = config.recipe_options()
    data = load_recipe_data(recipe, config.dataset, root=Path(fpha_root) if fpha_root else None)
    gcn = recipe.gcn_config(data)
    if model_identity(gcn) != config.model_config():  # the hash must describe this network
        raise RuntimeError(f"{config.name}: the model built differs from the run's identity")
    model = build_model(gcn, seed=config.seed)
    options = config.method_options()
    pruned = prune(
        config.method,
        model,
        data,
        config.rate,
        profile=profile,
        seed=config.seed,
        device=device,
        progress=progress,
        checkpoint_dir=run_dir,
        train_overrides=recipe.train_overrides(),
        **asdict(options),
    )
    final_topology = analyze(masks_from_model(pruned.model), pruned.model.config)  # type: ignore[arg-type]
    compact = compact_model(pruned.model.cpu())  # type: ignore[arg-type]
    if models_dir:
        save_compact(compact, Path(models_dir) / config.name)
    if structures_dir is not None:
        save_structure(structure_of(compact), structure_path(structures_dir, config.name))
    report = pruned.report
    identity = config.identity()
    record = RunRecord(
        config=config,
        identity=identity,
        hash=identity_hash(identity),
        report=dataclasses.replace(report, history=_evaluated_rows(report.history)),
        # Where the kept weights sit and which of them are A-C, tensor by tensor: the % A-C
        # column of Table 1, broken down.
        tensors=tuple(
            TensorRow(
                tensor=str(row["tensor"]),
                weights=int(row["weights"]),
                kept=int(row["kept"]),
                effective=int(row["effective"]),
            )
            for row in final_topology.tensor_rows()
        ),
        # wall_time_s here is this call's; the report's is the training time of all calls.
        provenance=Provenance(
            **provenance(report.device, time.perf_counter() - start, source), resumed=resumed
        ),
    )
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)  # the record holds all that is kept
    return record


def run_config(
    config: RunConfig,
    results_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    fpha_root: str | os.PathLike[str] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    checkpoints_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> RunRecord:
    """Compute ``config`` and write its record atomically into ``results_dir``; returns it.

    With ``checkpoints_dir`` and a profile that checkpoints, the run checkpoints in
    ``<checkpoints_dir>/<run name>`` and resumes from there when called again after an
    interruption (see the module doc); the folder is removed after the record is written.
    The record's provenance then names the commit the run started with and ``resumed``.

    With ``models_dir``, the trained network is also saved there in compact form
    (:func:`tcmplib.compact.save_compact`, folder ``<models_dir>/<run name>``): the tiny
    networks of the last chapter. Models stay out of the results folder on purpose: weights
    trained on FPHA are derived from data that may not be redistributed. What the results
    folder does get, always, is the network's structure (kept unit indices and sizes, no
    weight; :func:`tcmplib.records.structure_path`), from which the inference benchmark
    rebuilds a network of the same shapes to time after the weights are gone.
    """
    record = execute(
        config,
        device=device,
        fpha_root=fpha_root,
        models_dir=models_dir,
        checkpoints_dir=checkpoints_dir,
        structures_dir=results_dir,
        progress=progress,
    )
    write_record(record, record_path(results_dir, record.name))
    return record
