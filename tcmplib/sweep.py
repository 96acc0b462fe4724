"""Sweeps: the grids of runs behind the paper's tables, executed through papermill.

One *run* is one :class:`~tcmplib.run.RunConfig` (:mod:`tcmplib.run`). A sweep executes each
through the parametrized notebook :data:`RUN_NOTEBOOK` (papermill injects the config into its
``parameters`` cell), which calls :func:`tcmplib.run.run_config` and leaves two things
behind:

- the run's record ``<results_dir>/<method>_rate<rate>_seed<seed>_<hash>.json`` and its
  network's structure (:mod:`tcmplib.records`), written atomically;
- the executed notebook, under ``notebooks_dir`` (outside the book), for a reader who wants
  to see what the run printed.

A *sweep* expands a named grid (:data:`GRIDS`, e.g. ``"table1"``, read from the method
registry) over seeds, skips every run whose record already exists under the same hash (so an
interrupted sweep resumes where it stopped) and executes the rest one after another or on a
Dask cluster (:func:`sweep`, ``tcmp sweep``). Tables are read back from the results folder by
:mod:`tcmplib.tables`. A run of a profile that checkpoints also resumes within itself (see
:mod:`tcmplib.run`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from tcmplib import records

# The run itself lives in tcmplib.run; these names are re-exported for the run notebook,
# the chapters and scripts that import them from here.
from tcmplib.run import (  # noqa: F401
    RunConfig,
    checkpointed_epochs,
    cpu_name,
    git_state,
    provenance,
    resume_key,
    run_config,
)

__all__ = [
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
    "execute_run",
    "sweep",
    "default_results_dir",
    "default_models_dir",
    "default_checkpoints_dir",
    "project_root",
]

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


def _table1_grid() -> tuple[tuple[str, float], ...]:
    """The dense baseline, then every registered method in the grids at each Table 1 rate."""
    from tcmplib.pruning import METHODS

    dense = tuple((key, 0.0) for key, cls in METHODS.items() if cls.tc_by_design is None)
    pruning = [key for key, cls in METHODS.items() if cls.in_grids and cls.tc_by_design is not None]
    return dense + tuple((method, rate) for rate in TABLE1_RATES for method in pruning)


#: Named grids of (method, rate) pairs, read from the method registry
#: (:data:`tcmplib.pruning.METHODS`). ``table1``: Table 1-right of the paper (the baseline,
#: MP, greedy TC and TCMP at 50/75/95/99%) plus PMP, the sibling paper's method, at the same
#: rates. ``baseline``: the dense network alone (a recipe's test accuracy).
#: ``disconnection``: the dense network, then relaxed MP and TCMP at 95 and 99%, where the
#: paper sees MP disconnect (chapter 4b runs it on the per-head variant of the network).
GRIDS: dict[str, tuple[tuple[str, float], ...]] = {
    "baseline": (("baseline", 0.0),),
    "table1": _table1_grid(),
    "disconnection": (
        ("baseline", 0.0),
        *((method, rate) for rate in (0.95, 0.99) for method in ("mp", "tcmp")),
    ),
}

EXECUTORS = ("local", "dask")


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
    """Where the record of ``config`` goes in ``results_dir``."""
    return records.record_path(results_dir, config.name)


def structure_path(results_dir: str | os.PathLike[str], config: RunConfig) -> Path:
    """Where the structure of ``config``'s network goes (``networks/<run name>.json``)."""
    return records.structure_path(results_dir, config.name)


def find_result(results_dir: str | os.PathLike[str], config: RunConfig) -> Path | None:
    """The record of ``config`` in ``results_dir`` if a complete one is there.

    The file name carries the hash; the record is read in full (a damaged or older-format
    file is an error naming it, not a run to redo silently) and its hash checked.
    """
    path = result_path(results_dir, config)
    if not path.is_file():
        return None
    record = records.read_record(path)
    if record.hash != config.hash:
        raise ValueError(
            f"{path}: holds hash {record.hash!r}, expected {config.hash!r}; delete it to rerun"
        )
    return path


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
        **config.to_json(),
        "options": json.dumps(dict(config.options)),  # papermill parameters are plain values
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
    # A partial of a module-level function pickles, so Dask workers can run it as it is.
    task = functools.partial(
        execute_run,
        results_dir=results,
        notebooks_dir=notebooks,
        device=device,
        fpha_root=fpha_root,
        models_dir=models,
        checkpoints_dir=checkpoints,
        kernel_name=kernel_name,
    )
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
