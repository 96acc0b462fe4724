"""Sweeps: the grids of runs behind the paper's tables, executed through papermill.

One *run* is one :class:`RunConfig` (data set, method, pruning rate, seed, profile). It is
executed by the parametrized notebook :data:`RUN_NOTEBOOK` (papermill injects the config into
its ``parameters`` cell), which calls :func:`run_config` and leaves two things behind:

- a result file ``<results_dir>/<method>_rate<rate>_seed<seed>_<hash>.json`` (written
  atomically): the config and its hash, the method's report, the test metrics at every
  evaluated epoch, and provenance (git commit, device, versions, wall time, date);
- the executed notebook, under ``notebooks_dir`` (outside the book), for a reader who wants
  to see what the run printed.

A *sweep* expands a named grid (:data:`GRIDS`, e.g. ``"table1"``) over seeds, skips every run
whose result file already exists with the same config hash (so an interrupted sweep resumes
where it stopped) and executes the rest one after another or on a Dask cluster
(:func:`sweep`, ``tcmp sweep``). Tables are read back from the results folder by
:mod:`tcmplib.tables`.

A run of a profile that checkpoints (``paper``: every 100 epochs) also resumes *within*
itself: its checkpoints live in ``<checkpoints_dir>/<run name>/`` (outside the results, like
the models: they hold weights trained on the data), so a sweep killed in the middle of a
2,700-epoch run loses at most 100 epochs of it. A run resumes only with the code, torch,
device and CPU kernels it started with (:func:`resume_key`), since on a CPU only those repeat
an uninterrupted run bit for bit; its folder is removed once the result is written.

The hash covers the run's config, the profile's full training schedule, the result format and
the method's revision (:attr:`tcmplib.pruning.base.PruningMethod.revision`, once bumped), not
the device: a run on a GPU and one on a CPU answer the same question (the
provenance says where each ran).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

__all__ = [
    "RESULT_FORMAT",
    "STRUCTURES_FOLDER",
    "RUN_NOTEBOOK",
    "GRIDS",
    "EXECUTORS",
    "RunConfig",
    "RunFailure",
    "SweepSummary",
    "expand_grid",
    "result_path",
    "structure_path",
    "find_result",
    "run_config",
    "git_state",
    "provenance",
    "cpu_name",
    "execute_run",
    "sweep",
    "default_results_dir",
    "default_models_dir",
    "default_checkpoints_dir",
    "project_root",
    "resume_key",
    "checkpointed_epochs",
]

#: Version of the result-file layout; part of every config hash.
RESULT_FORMAT = 1

#: Subfolder of a results folder with each run's compact-network structure (no weights).
STRUCTURES_FOLDER = "networks"

#: In a run's checkpoint folder: the code and machine the run started on.
STARTED_FILE = "started.json"

#: Environment of every run's kernel. glibc hands blocks above its mmap threshold (at most
#: 32 MB) straight back to the operating system when freed, so each training step faults
#: its large activations in again as fresh, zeroed pages, which costs an epoch as much system
#: CPU time as a good part of its computation (``benchmarks/bench_allocator.py`` measures
#: both). Without mmap and without trimming, freed blocks stay in the heap and the next step
#: reuses them. Memory placement enters no computation: the numbers are the same, bit for bit.
KERNEL_ENV: dict[str, str] = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"}

#: The parametrized notebook that executes one run (shipped with the package).
RUN_NOTEBOOK = Path(str(files("tcmplib").joinpath("notebooks/run.ipynb")))

TABLE1_RATES = (0.5, 0.75, 0.95, 0.99)

#: Named grids of (method, rate) pairs. ``table1``: Table 1-right of the paper (the baseline,
#: MP, greedy TC and TCMP at 50/75/95/99%) plus PMP, the sibling paper's method, at the same
#: rates. ``baseline``: the dense network alone (a recipe's test accuracy).
GRIDS: dict[str, tuple[tuple[str, float], ...]] = {
    "baseline": (("baseline", 0.0),),
    "table1": (("baseline", 0.0),)
    + tuple(
        (method, rate) for rate in TABLE1_RATES for method in ("mp", "greedy-tc", "tcmp", "pmp")
    ),
}

EXECUTORS = ("local", "dask")

_DATASETS = ("synthetic", "fpha")


def _method_names() -> list[str]:
    from tcmplib.pruning import METHODS

    return ["baseline", *sorted(METHODS)]


@dataclass(frozen=True)
class RunConfig:
    """What one run computes. ``method="baseline"`` trains the dense network (rate 0)."""

    dataset: str = "synthetic"
    method: str = "baseline"
    rate: float = 0.0
    seed: int = 0
    profile: str = "book"
    recipe: str = "as-written"  # a name from tcmplib.recipe.RECIPES

    def __post_init__(self) -> None:
        from tcmplib.profiles import get_profile
        from tcmplib.pruning import validate_rate
        from tcmplib.recipe import get_recipe

        if self.dataset not in _DATASETS:
            raise ValueError(
                f"dataset: expected one of {', '.join(_DATASETS)}, got {self.dataset!r}"
            )
        methods = _method_names()
        if self.method not in methods:
            raise ValueError(f"method: expected one of {', '.join(methods)}, got {self.method!r}")
        object.__setattr__(self, "rate", validate_rate(self.rate))
        if self.method == "baseline" and self.rate != 0.0:
            raise ValueError(f"rate: the baseline is dense, expected 0.0, got {self.rate!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {self.seed!r}")
        get_profile(self.profile)  # raises with the valid names
        get_recipe(self.recipe)

    def recipe_options(self) -> Any:
        """The :class:`tcmplib.recipe.Recipe` this run trains under."""
        from tcmplib.recipe import get_recipe

        return get_recipe(self.recipe)

    def train_schedule(self) -> dict[str, Any]:
        """The profile's training config (seeded, with the recipe's optimizer settings),
        without the device: part of the hash."""
        from tcmplib.profiles import get_profile

        overrides = self.recipe_options().train_overrides()
        schedule = asdict(get_profile(self.profile).train_config(seed=self.seed, **overrides))
        schedule.pop("device")
        return schedule

    def method_revision(self) -> int:
        """The pruning method's :attr:`~tcmplib.pruning.base.PruningMethod.revision` (1 for
        the baseline)."""
        from tcmplib.pruning import METHODS

        return 1 if self.method == "baseline" else METHODS[self.method].revision

    @property
    def hash(self) -> str:
        """12 hex digits identifying the run: config, training schedule, result format, the
        recipe's options (those switched on: the paper's text as written adds none) and, from
        its revision 2 on, the method's revision."""
        config = asdict(self)
        del config["recipe"]  # its name says nothing: its options do
        key: dict[str, Any] = {
            "format": RESULT_FORMAT,
            "config": config,
            "train": self.train_schedule(),
        }
        changes = self.recipe_options().changes()
        if changes:
            key["recipe"] = changes
        revision = self.method_revision()
        if revision > 1:  # revision 1 hashes without the field: see PruningMethod.revision
            key["revision"] = revision
        text = json.dumps(key, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        return f"{self.method}_rate{self.rate:.4f}_seed{self.seed}_{self.hash}"


def default_results_dir(dataset: str, profile: str, recipe: str = "as-written") -> Path:
    """Where a sweep writes by default: ``results/<dataset>-<profile>``, with ``-<recipe>``
    appended for a recipe other than the paper's text as written.

    Smoke runs mean nothing and are never committed: they go to ``runs/results/`` instead.
    """
    base = Path("runs") / "results" if profile == "smoke" else Path("results")
    suffix = "" if recipe == "as-written" else f"-{recipe}"
    return base / f"{dataset}-{profile}{suffix}"


def default_notebooks_dir(results_dir: str | os.PathLike[str]) -> Path:
    """Executed run notebooks go under ``runs/notebooks/`` of the checkout holding the results
    (not committed, not a book page)."""
    results = Path(results_dir).resolve()
    return project_root(results.parent) / "runs" / "notebooks" / results.name


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The checkout that holds the book (``_toc.yml`` beside ``tcmplib/``), from ``start`` up.

    Chapters execute with their own folder as working directory; they resolve the results
    folders against this root so that the book and ``tcmp sweep`` (run from the root) read
    the same files. Outside a checkout: ``start`` itself.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "tcmplib").is_dir():
            return folder
    return here


def default_models_dir(results_dir: str | os.PathLike[str]) -> Path:
    """Compact networks of a sweep go under ``runs/models/`` too: never committed."""
    results = Path(results_dir).resolve()
    return project_root(results.parent) / "runs" / "models" / results.name


def default_checkpoints_dir(results_dir: str | os.PathLike[str]) -> Path:
    """Checkpoints of unfinished runs: ``runs/checkpoints/<results name>``, never committed."""
    results = Path(results_dir).resolve()
    return project_root(results.parent) / "runs" / "checkpoints" / results.name


def expand_grid(
    grid: str | Iterable[tuple[str, float]],
    *,
    seeds: int | Sequence[int] = 1,
    profile: str = "book",
    dataset: str = "synthetic",
    recipe: str = "as-written",
) -> list[RunConfig]:
    """The runs of ``grid`` (a name from :data:`GRIDS` or (method, rate) pairs) for each seed.

    ``seeds`` is a count (seeds 0..n-1) or an explicit list. Runs are ordered seed by seed,
    so that a sweep interrupted early has complete grids for the first seeds.
    """
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"grid: expected one of {', '.join(sorted(GRIDS))}, got {grid!r}")
        pairs = GRIDS[grid]
    else:
        pairs = tuple(grid)
    if isinstance(seeds, bool):
        raise ValueError(f"seeds: expected a count >= 1 or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds: expected a count >= 1 or a list of seeds, got {seeds!r}")
        seed_list: list[int] = list(range(seeds))
    else:
        seed_list = list(seeds)
        if not seed_list:
            raise ValueError("seeds: expected at least one seed, got an empty list")
    runs = [
        RunConfig(
            dataset=dataset, method=method, rate=rate, seed=seed, profile=profile, recipe=recipe
        )
        for seed in seed_list
        for method, rate in pairs
    ]
    return list(dict.fromkeys(runs))  # drop repeats, keep order


def result_path(results_dir: str | os.PathLike[str], config: RunConfig) -> Path:
    return Path(results_dir) / f"{config.name}.json"


def structure_path(results_dir: str | os.PathLike[str], config: RunConfig) -> Path:
    """Where a run's compact-network structure goes (:func:`tcmplib.compact.save_structure`):
    ``<results>/networks/<run name>.json``, committed with the result."""
    return Path(results_dir) / STRUCTURES_FOLDER / f"{config.name}.json"


def find_result(results_dir: str | os.PathLike[str], config: RunConfig) -> Path | None:
    """The result file of ``config`` in ``results_dir`` if a complete one is there."""
    path = result_path(results_dir, config)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path}: not a readable result file ({err}); delete it to rerun"
        ) from None  # noqa: E501
    if record.get("config_hash") != config.hash:
        raise ValueError(
            f"{path}: holds config hash {record.get('config_hash')!r}, expected {config.hash!r}; "
            "delete it to rerun"
        )
    return path


# -------------------------------------------------------------------------------------------
# One run (called from the run notebook)
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


def run_config(
    config: RunConfig,
    results_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    fpha_root: str | os.PathLike[str] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    checkpoints_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``config`` and write its result file atomically; returns the record written.

    With ``checkpoints_dir`` and a profile that checkpoints, the run checkpoints in
    ``<checkpoints_dir>/<run name>`` and resumes from there when called again after an
    interruption (see the module doc); the folder is removed after the result is written.
    The result's provenance then names the commit the run started with and ``resumed``.

    With ``models_dir``, the trained network is also saved there in compact form
    (:func:`tcmplib.compact.save_compact`, folder ``<models_dir>/<run name>``): the tiny
    networks of the last chapter. Models stay out of the results folder on purpose: weights
    trained on FPHA are derived from data that may not be redistributed. What the results
    folder does get, always, is the network's structure (kept unit indices and sizes, no
    weight; :func:`structure_path`), from which the inference benchmark rebuilds a network of
    the same shapes to time after the weights are gone.
    """
    import torch  # noqa: F401  (fail early here rather than deep in a method)

    from tcmplib.profiles import get_profile
    from tcmplib.pruning import prune
    from tcmplib.recipe import load_recipe_data
    from tcmplib.topology import analyze, masks_from_model
    from tcmplib.train import atomic_write, build_model, train

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
    model = build_model(recipe.gcn_config(data), seed=config.seed)
    if config.method == "baseline":
        result = train(
            model,
            data,
            profile.train_config(seed=config.seed, device=device, **recipe.train_overrides()),
            progress=progress,
            checkpoint_dir=run_dir,
        )
        topology = analyze(masks_from_model(model))
        report: dict[str, Any] = {
            "method": "baseline",
            "target_rate": 0.0,
            "achieved_rate": 1.0 - topology.total_kept / topology.total_weights,
            "kept_weights": topology.total_kept,
            "total_weights": topology.total_weights,
            "percent_ac": topology.percent_ac,
            "class_avg_accuracy": result.test["class_avg_accuracy"],
            "accuracy": result.test["accuracy"],
            "wall_time_s": result.wall_time_s,
            "device": result.device,
            "options": {},
            "details": {},
            "topologically_consistent": topology.percent_ac >= 100.0,
        }
        history = result.history
    else:
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
        )
        report = pruned.report.to_dict()
        history = report.pop("history")
    from tcmplib.compact import compact_model, save_compact, save_structure, structure_of

    final_model = model if config.method == "baseline" else pruned.model
    final_topology = analyze(masks_from_model(final_model))  # type: ignore[arg-type]
    compact = compact_model(final_model.cpu())  # type: ignore[arg-type]
    if models_dir:
        save_compact(compact, Path(models_dir) / config.name)
    # Before the result: a result file on disk always has its structure beside it.
    save_structure(structure_of(compact), structure_path(results_dir, config))
    record = {
        "format": RESULT_FORMAT,
        "config": asdict(config),
        "config_hash": config.hash,
        "train_config": config.train_schedule(),
        "recipe": asdict(recipe),
        "report": report,
        "history": _evaluated_rows(history),
        # Where the kept weights sit and which of them are A-C, tensor by tensor: the % A-C
        # column of Table 1, broken down.
        "tensors": [
            {key: row[key] for key in ("tensor", "weights", "kept", "effective")}
            for row in final_topology.tensor_rows()
        ],
        # wall_time_s here is this call's; the report's is the training time of all calls.
        "provenance": {
            **provenance(report["device"], time.perf_counter() - start, source),
            "resumed": resumed,
        },
    }
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(result_path(results_dir, config), lambda handle: handle.write(text.encode()))
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)  # the result holds all that is kept
    return record


# -------------------------------------------------------------------------------------------
# Executing runs through papermill
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFailure:
    config: RunConfig
    error: str  # one line
    notebook: str  # the executed notebook, with the traceback in its outputs


def execute_run(
    config: RunConfig,
    results_dir: str | os.PathLike[str],
    notebooks_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    fpha_root: str | os.PathLike[str] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    checkpoints_dir: str | os.PathLike[str] | None = None,
    kernel_name: str | None = None,
) -> str:
    """Execute :data:`RUN_NOTEBOOK` for ``config``; returns the path of the result file.

    Raises ``RuntimeError`` with a one-line message when the notebook fails or writes no
    result. Self-contained (paths as strings in and out) so that a Dask worker can run it.
    """
    import papermill

    results = Path(results_dir).resolve()
    notebook = Path(notebooks_dir).resolve() / f"{config.name}.ipynb"
    notebook.parent.mkdir(parents=True, exist_ok=True)
    parameters = {
        **asdict(config),
        "device": device,
        "results_dir": str(results),
        "fpha_root": str(fpha_root) if fpha_root else "",
        "models_dir": str(Path(models_dir).resolve()) if models_dir else "",
        "checkpoints_dir": str(Path(checkpoints_dir).resolve()) if checkpoints_dir else "",
    }
    try:
        with _environment(KERNEL_ENV):  # the kernel inherits it at launch
            papermill.execute_notebook(
                str(RUN_NOTEBOOK),
                str(notebook),
                parameters=parameters,
                kernel_name=kernel_name,
                progress_bar=False,
                # The kernel's own start-up warnings would land in the caller's stderr (and in
                # the outputs of a notebook that runs a sweep); errors still show.
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
                cwd=str(results.parent if results.parent.exists() else Path.cwd()),
            )
    except Exception as err:  # papermill raises its own error with the cell's exception
        summary = str(err).strip().splitlines()
        reason = next((line for line in reversed(summary) if line.strip()), type(err).__name__)
        raise RuntimeError(f"{config.name}: run failed ({reason}); see {notebook}") from None
    path = find_result(results, config)
    if path is None:
        raise RuntimeError(f"{config.name}: the notebook finished without writing {results}")
    return str(path)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, as it was afterwards (for a child process)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _shown(path: Path) -> str:
    """A results folder as a reader wants it: relative to its checkout when inside one."""
    resolved = path.resolve()
    root = project_root(resolved.parent)
    return os.path.relpath(resolved, root) if resolved.is_relative_to(root) else str(path)


@dataclass
class SweepSummary:
    """What a sweep found and did. Paths are result files."""

    results_dir: Path
    checkpoints_dir: Path | None = None  # where unfinished runs of the sweep checkpoint
    reused: list[RunConfig] = field(default_factory=list)
    pending: list[RunConfig] = field(default_factory=list)  # missing when the sweep started
    ran: list[RunConfig] = field(default_factory=list)
    failed: list[RunFailure] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        text = (
            f"sweep in {_shown(self.results_dir)}: {len(self.reused)} reused, "
            f"{len(self.pending)} to run: "
            f"{len(self.ran)} ran, {len(self.failed)} failed ({self.wall_time_s:.0f} s)"
        )
        return "\n".join([text, *(f"  failed: {f.error}" for f in self.failed)])


def sweep(
    grid: str | Iterable[tuple[str, float]] = "table1",
    *,
    profile: str = "book",
    dataset: str = "synthetic",
    seeds: int | Sequence[int] = 1,
    recipe: str = "as-written",
    results_dir: str | os.PathLike[str] | None = None,
    notebooks_dir: str | os.PathLike[str] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    save_models: bool = True,
    checkpoints_dir: str | os.PathLike[str] | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    fpha_root: str | os.PathLike[str] | None = None,
    kernel_name: str | None = None,
    progress: bool = True,
    dry_run: bool = False,
) -> SweepSummary:
    """Run every configuration of ``grid`` that has no result in ``results_dir`` yet.

    ``executor="local"`` runs them one after another in this process's papermill;
    ``executor="dask"`` submits them to the Dask scheduler at ``scheduler`` (an address such
    as ``tcp://host:8786``) or, when it is None, to a ``LocalCluster`` of ``workers``
    single-threaded worker processes started for this sweep. A failed run does not stop the
    others; it is listed in the summary (and the command exits non-zero). With ``dry_run``
    nothing runs: the summary's ``pending`` lists the runs still missing. Each run's compact
    network is saved under ``models_dir`` (default ``runs/models/<results name>``) unless
    ``save_models`` is false. Runs of a profile that checkpoints keep their checkpoints in
    ``checkpoints_dir`` (default ``runs/checkpoints/<results name>``) until they finish, and
    a sweep started again after an interruption resumes each unfinished run from there.
    """
    from tcmplib.train import DEVICES

    if executor not in EXECUTORS:
        raise ValueError(f"executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if scheduler is not None and executor != "dask":
        raise ValueError("scheduler: only used with executor='dask'")
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {', '.join(DEVICES)}, got {device!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers: expected a positive integer, got {workers!r}")
    runs = expand_grid(grid, seeds=seeds, profile=profile, dataset=dataset, recipe=recipe)
    results = (
        Path(results_dir)
        if results_dir is not None
        else default_results_dir(dataset, profile, recipe)
    )
    notebooks = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir(results)
    checkpoints = Path(checkpoints_dir or default_checkpoints_dir(results))
    summary = SweepSummary(results_dir=results, checkpoints_dir=checkpoints)
    missing: list[RunConfig] = []
    for config in runs:
        (summary.reused if find_result(results, config) else missing).append(config)
    summary.pending = missing
    if dry_run or not missing:
        return summary

    start = time.perf_counter()
    models = Path(models_dir or default_models_dir(results)) if save_models else None
    task = _RunTask(results, notebooks, device, fpha_root, models, checkpoints, kernel_name)
    outcomes = (
        _run_local(task, missing, progress=progress)
        if executor == "local"
        else _run_dask(task, missing, progress=progress, scheduler=scheduler, workers=workers)
    )
    for config, error in outcomes:
        if error is None:
            summary.ran.append(config)
        else:
            notebook = str(notebooks.resolve() / f"{config.name}.ipynb")
            summary.failed.append(RunFailure(config, error, notebook))
    summary.wall_time_s = time.perf_counter() - start
    return summary


@dataclass(frozen=True)
class _RunTask:
    """``execute_run`` with the sweep's fixed arguments bound (picklable for Dask)."""

    results_dir: Path
    notebooks_dir: Path
    device: str
    fpha_root: str | os.PathLike[str] | None
    models_dir: Path | None
    checkpoints_dir: Path
    kernel_name: str | None

    def __call__(self, config: RunConfig) -> str:
        return execute_run(
            config,
            self.results_dir,
            self.notebooks_dir,
            device=self.device,
            fpha_root=self.fpha_root,
            models_dir=self.models_dir,
            checkpoints_dir=self.checkpoints_dir,
            kernel_name=self.kernel_name,
        )


Outcome = tuple[RunConfig, "str | None"]  # (config, one-line error or None)


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sweep", unit="run", disable=not enabled)


def _run_local(
    task: Callable[[RunConfig], str], runs: list[RunConfig], *, progress: bool
) -> Iterable[Outcome]:
    with _progress_bar(len(runs), progress) as bar:
        for config in runs:
            bar.set_postfix_str(config.name, refresh=True)
            try:
                task(config)
                yield config, None
            except RuntimeError as err:
                yield config, str(err)
            bar.update()


def _run_dask(
    task: Callable[[RunConfig], str],
    runs: list[RunConfig],
    *,
    progress: bool,
    scheduler: str | None,
    workers: int | None,
) -> Iterable[Outcome]:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        n = workers or min(len(runs), max(1, (os.cpu_count() or 1)))
        # One thread per worker: each run is a kernel process that uses the cores itself.
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        )
    client = Client(cluster if cluster is not None else scheduler)
    try:
        # pure=False: a rerun of the same config after a failure must really run again.
        futures = {client.submit(task, config, pure=False): config for config in runs}
        with _progress_bar(len(runs), progress) as bar:
            for future in as_completed(futures):
                config = futures[future]
                try:
                    future.result()
                    yield config, None
                except RuntimeError as err:
                    yield config, str(err)
                bar.update()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
