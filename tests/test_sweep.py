"""Sweeps: configs and hashes, resuming, papermill runs, a Dask LocalCluster, the command."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from record_factory import make_record

from tcmplib import cli, tables
from tcmplib.compact import load_structure, structure_of
from tcmplib.sweep import (
    GRIDS,
    KERNEL_ENV,
    RUN_NOTEBOOK,
    RunConfig,
    execute_run,
    expand_grid,
    find_result,
    git_state,
    provenance,
    result_path,
    run_config,
    structure_path,
    sweep,
)

TINY_GRID = (("baseline", 0.0), ("mp-oneshot", 0.9))


# -------------------------------------------------------------------------------------------
# Configs, grids and hashes
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dataset": "ntu"}, "dataset: expected one of synthetic, fpha"),
        ({"method": "prune-all"}, "method: expected one of baseline, mp, greedy-tc"),
        ({"method": "mp", "rate": 1.0}, r"rate: expected a fraction in \[0, 1\)"),
        ({"method": "baseline", "rate": 0.5}, "the baseline is dense"),
        ({"seed": -1}, "seed: expected an integer >= 0"),
        ({"profile": "huge"}, "profile: expected one of book, paper, smoke"),
    ],
)
def test_run_config_rejects_bad_fields(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunConfig(**fields)  # type: ignore[arg-type]


def test_hash_is_stable_and_tells_runs_apart() -> None:
    a = RunConfig(method="tcmp", rate=0.95, seed=0, profile="smoke")
    assert a.hash == RunConfig(method="tcmp", rate=0.95, seed=0, profile="smoke").hash
    assert len(a.hash) == 12 and int(a.hash, 16) >= 0
    others = [
        RunConfig(method="tcmp", rate=0.95, seed=1, profile="smoke"),
        RunConfig(method="tcmp", rate=0.99, seed=0, profile="smoke"),
        RunConfig(method="mp", rate=0.95, seed=0, profile="smoke"),
        RunConfig(method="tcmp", rate=0.95, seed=0, profile="book"),
        RunConfig(dataset="fpha", method="tcmp", rate=0.95, seed=0, profile="smoke"),
    ]
    assert len({a.hash, *(o.hash for o in others)}) == 6
    # the training schedule is part of the key, the device is not
    assert a.train_schedule()["epochs"] == 4 and "device" not in a.train_schedule()
    assert a.name == f"tcmp_rate0.9500_seed0_{a.hash}"


def test_table1_grid_is_the_papers_plus_pmp() -> None:
    runs = expand_grid("table1", seeds=2, profile="smoke")
    assert len(GRIDS["table1"]) == 17 and len(runs) == 34
    first = runs[:17]
    assert {r.seed for r in first} == {0}, "one whole seed first, so a partial sweep is usable"
    assert first[0] == RunConfig(method="baseline", profile="smoke")
    methods = {(r.method, r.rate) for r in first[1:]}
    assert methods == {
        (m, rate) for m in ("mp", "greedy-tc", "tcmp", "pmp") for rate in (0.5, 0.75, 0.95, 0.99)
    }
    assert [r.seed for r in expand_grid("table1", seeds=[3, 5])][::17] == [3, 5]


def test_grid_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="grid: expected one of baseline, disconnection, table1, got 'table9'"):
        expand_grid("table9")
    with pytest.raises(ValueError, match="seeds: expected a count >= 1"):
        expand_grid("table1", seeds=0)
    with pytest.raises(ValueError, match="seeds: expected at least one seed"):
        expand_grid("table1", seeds=[])


def test_run_notebook_has_typed_parameters() -> None:
    notebook = nbformat.read(RUN_NOTEBOOK, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in (
        "dataset: str",
        "method: str",
        "rate: float",
        "seed: int",
        "profile: str",
        "device: str",
        "results_dir: str",
        "fpha_root: str",
    ):
        assert line in tagged[0].source


def test_find_result_refuses_a_file_with_another_hash(tmp_path: Path) -> None:
    config = RunConfig(method="mp", rate=0.5, profile="smoke")
    assert find_result(tmp_path, config) is None
    path = result_path(tmp_path, config)
    other = make_record("mp", 0.5, profile="book")  # a valid record of another identity
    path.write_text(json.dumps(other))
    with pytest.raises(ValueError, match=f"{path.name}: holds hash '{other['hash']}'"):
        find_result(tmp_path, config)
    path.write_text("{ not json")
    with pytest.raises(ValueError, match="expected a JSON run record, unreadable"):
        find_result(tmp_path, config)


# -------------------------------------------------------------------------------------------
# Runs (smoke profile: seconds each)
# -------------------------------------------------------------------------------------------


def _numbers(record: dict[str, object]) -> dict[str, object]:
    report = dict(record["report"])  # type: ignore[call-overload]
    for key in ("wall_time_s", "device"):
        report.pop(key)
    return {"report": report, "history": record["history"], "hash": record["hash"]}


def test_run_config_writes_a_complete_record_and_is_deterministic(tmp_path: Path) -> None:
    config = RunConfig(method="mp-oneshot", rate=0.9, seed=1, profile="smoke")
    record = run_config(config, tmp_path / "a", device="cpu").to_json()
    on_disk = json.loads(result_path(tmp_path / "a", config).read_text())
    assert on_disk == json.loads(json.dumps(record))
    assert on_disk["format"] == 2 and on_disk["hash"] == config.hash
    assert on_disk["identity"] == config.identity() and on_disk["code"] is None
    assert on_disk["config"] == {
        "dataset": "synthetic",
        "method": "mp-oneshot",
        "rate": 0.9,
        "seed": 1,
        "profile": "smoke",
        "recipe": "as-written",
        "options": {},
    }
    report = on_disk["report"]
    assert report["kept_weights"] == round(0.1 * 1_967_616) and report["target_rate"] == 0.9
    assert 0.0 <= report["class_avg_accuracy"] <= 1.0
    assert [row["epoch"] for row in on_disk["history"]] == [2, 4], "only evaluated epochs"
    prov = on_disk["provenance"]
    assert set(prov) >= {
        "git_commit",
        "git_dirty",
        "device",
        "torch",
        "tcmplib",
        "python",
        "wall_time_s",
        "date",
        "cpu",
        "cpu_capability",
    }
    assert prov["cpu"] and prov["cpu_capability"], "the machine that computed it"
    assert prov["device"].startswith("cpu")
    again = run_config(config, tmp_path / "b", device="cpu").to_json()
    assert _numbers(again) == _numbers(record)
    assert not list((tmp_path / "a").glob("*.tmp")), "no temporary file is left behind"


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("local")
    summary = sweep(
        TINY_GRID,
        profile="smoke",
        results_dir=root / "results",
        notebooks_dir=root / "notebooks",
        device="cpu",
        progress=False,
    )
    assert summary.ok, str(summary)
    assert len(summary.ran) == 2 and not summary.reused
    return root


def test_sweep_writes_results_and_executed_notebooks(local_sweep: Path) -> None:
    results = sorted(p.name for p in (local_sweep / "results").glob("*.json"))
    notebooks = sorted(p.name for p in (local_sweep / "notebooks").glob("*.ipynb"))
    names = sorted(c.name for c in expand_grid(TINY_GRID, profile="smoke"))
    assert results == [f"{n}.json" for n in names]
    assert notebooks == [f"{n}.ipynb" for n in names]
    executed = nbformat.read(local_sweep / "notebooks" / notebooks[0], as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'profile = "smoke"' in injected[0].source


def test_sweep_resumes_and_reuses_what_is_there(local_sweep: Path) -> None:
    results = local_sweep / "results"
    stamps = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    summary = sweep(
        TINY_GRID,
        profile="smoke",
        results_dir=results,
        notebooks_dir=local_sweep / "notebooks",
        progress=False,
    )
    assert len(summary.reused) == 2 and not summary.pending and not summary.ran
    assert {p: p.stat().st_mtime_ns for p in results.glob("*.json")} == stamps
    planned = sweep(TINY_GRID, profile="smoke", seeds=2, results_dir=results, dry_run=True)
    assert [c.seed for c in planned.pending] == [1, 1] and len(planned.reused) == 2
    assert len(list(results.glob("*.json"))) == 2, "a dry run runs nothing"


def test_a_failed_run_is_reported_and_does_not_stop_the_others(tmp_path: Path) -> None:
    summary = sweep(
        [("baseline", 0.0)],
        profile="smoke",
        dataset="fpha",
        fpha_root=tmp_path / "no-such-folder",
        results_dir=tmp_path / "r",
        notebooks_dir=tmp_path / "nb",
        progress=False,
    )
    assert not summary.ok and len(summary.failed) == 1 and not summary.ran
    failure = summary.failed[0]
    assert "\n" not in failure.error and "run failed" in failure.error
    assert Path(failure.notebook).is_file(), "the executed notebook keeps the traceback"
    assert not list(tmp_path.glob("r/*.json")), "nothing is half-written"


def test_dask_local_cluster_gives_the_same_numbers(local_sweep: Path, tmp_path: Path) -> None:
    summary = sweep(
        TINY_GRID,
        profile="smoke",
        results_dir=tmp_path / "results",
        notebooks_dir=tmp_path / "notebooks",
        executor="dask",
        workers=2,
        device="cpu",
        progress=False,
    )
    assert summary.ok, str(summary)
    assert len(summary.ran) == 2
    for config in expand_grid(TINY_GRID, profile="smoke"):
        ours = json.loads(result_path(tmp_path / "results", config).read_text())
        local = json.loads(result_path(local_sweep / "results", config).read_text())
        # Dask's workers run their kernels single-threaded (OMP_NUM_THREADS=1), which changes
        # the order of float sums: losses agree to float precision, counts and accuracies
        # exactly.
        assert ours["report"]["device"] == "cpu (1 threads)"
        a, b = _numbers(ours), _numbers(local)
        assert a["report"] == b["report"] and a["hash"] == b["hash"]
        for row_a, row_b in zip(a["history"], b["history"], strict=True):  # type: ignore[call-overload]
            assert row_a == pytest.approx(row_b, rel=1e-5)


def test_sweep_argument_errors() -> None:
    with pytest.raises(ValueError, match="executor: expected one of local, dask"):
        sweep(TINY_GRID, executor="ray")
    with pytest.raises(ValueError, match="scheduler: only used with executor='dask'"):
        sweep(TINY_GRID, scheduler="tcp://localhost:8786")
    with pytest.raises(ValueError, match="workers: expected a positive integer"):
        sweep(TINY_GRID, executor="dask", workers=0)


# -------------------------------------------------------------------------------------------
# The command
# -------------------------------------------------------------------------------------------


def test_cli_sweep_dry_run_lists_what_is_missing(
    local_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        [
            "sweep",
            "table1",
            "--profile",
            "smoke",
            "--results",
            str(local_sweep / "results"),
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "1 done, 16 to run" in out
    assert "tcmp_rate0.9900_seed0_" in out and "baseline_rate" not in out


def test_cli_sweep_rejects_a_scheduler_without_dask(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["sweep", "table1", "--scheduler", "tcp://localhost:8786", "--dry-run"])
    assert status == 2
    assert "--scheduler: only used with --executor dask" in capsys.readouterr().err


def test_run_config_saves_the_compact_network(tmp_path: Path) -> None:
    from tcmplib.compact import load_compact

    config = RunConfig(method="mp-oneshot", rate=0.9, profile="smoke")
    record = run_config(
        config, tmp_path / "results", device="cpu", models_dir=tmp_path / "m"
    ).to_json()
    compact = load_compact(tmp_path / "m" / config.name)
    # Dense blocks over the live units: at least the kept weights, at most the whole network.
    stored = sum(p.numel() for p in compact.parameters())
    assert record["report"]["kept_weights"] <= stored <= record["report"]["total_weights"]
    assert len(compact.kept.channels) <= compact.config.channels
    assert not list((tmp_path / "results").glob("*.safetensors")), "models stay out of results"
    # The structure, committed with the result, describes the same network.
    structure = load_structure(structure_path(tmp_path / "results", config))
    assert structure == structure_of(compact)


def test_run_config_writes_the_structure_without_saving_the_model(tmp_path: Path) -> None:
    config = RunConfig(method="mp-oneshot", rate=0.99, profile="smoke")
    record = run_config(config, tmp_path / "results", device="cpu").to_json()
    path = structure_path(tmp_path / "results", config)
    assert path == tmp_path / "results" / "networks" / f"{config.name}.json"
    structure = load_structure(path)
    # Compaction drops dangling weights: at most the kept ones remain, all of them A-C.
    report = record["report"]
    assert structure.nonzero_weights <= report["kept_weights"]
    assert structure.nonzero_weights == pytest.approx(
        report["kept_weights"] * report["percent_ac"] / 100, abs=1
    )
    assert tables.load_results(tmp_path / "results")["method"].tolist() == ["mp-oneshot"]
    # The per-tensor breakdown adds up to the report's totals.
    rows = record["tensors"]
    assert [row["tensor"] for row in rows] == ["wq", "wk", "wv", "fc"]
    assert sum(row["weights"] for row in rows) == report["total_weights"]
    assert sum(row["kept"] for row in rows) == report["kept_weights"]
    effective = sum(row["effective"] for row in rows)
    assert effective == structure.nonzero_weights
    assert 100 * effective / report["kept_weights"] == pytest.approx(report["percent_ac"])


def test_project_root_is_found_from_a_chapter_folder(tmp_path: Path) -> None:
    from tcmplib.sweep import project_root

    (tmp_path / "book" / "tcmplib").mkdir(parents=True)
    (tmp_path / "book" / "chapters").mkdir()
    (tmp_path / "book" / "_toc.yml").write_text("root: intro\n")
    assert project_root(tmp_path / "book" / "chapters") == (tmp_path / "book").resolve()
    assert project_root(tmp_path) == tmp_path.resolve(), "outside a checkout: the folder itself"


def test_provenance_keeps_the_git_state_of_the_start() -> None:
    start = {"git_commit": "0" * 40, "git_dirty": True}
    record = provenance("cpu", 12.3456, start)
    assert (record["git_commit"], record["git_dirty"]) == ("0" * 40, True)
    assert record["wall_time_s"] == 12.346
    now = git_state()  # this checkout: a 40-hex commit, or "unknown" outside git
    assert now["git_commit"] == "unknown" or len(now["git_commit"]) == 40
    assert provenance("cpu", 0.0)["git_commit"] == now["git_commit"]


def test_run_kernels_start_with_the_kernel_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import papermill

    seen: dict[str, str | None] = {}

    def fake_execute(*args: object, **kwargs: object) -> None:
        seen.update({key: os.environ.get(key) for key in KERNEL_ENV})

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what a Dask nanny sets
    monkeypatch.delenv("MALLOC_MMAP_MAX_", raising=False)
    config = RunConfig(method="mp", rate=0.5, profile="smoke")
    with pytest.raises(RuntimeError, match="finished without writing"):
        execute_run(config, tmp_path / "results", tmp_path / "notebooks")
    assert seen == KERNEL_ENV, "the kernel is launched with the kernel environment"
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536" and "MALLOC_MMAP_MAX_" not in os.environ
