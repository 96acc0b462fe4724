"""Runs interrupted mid-training resume from their checkpoints to the numbers of an
uninterrupted run: every pruning method (two-phase ones interrupted in either phase), and a
sweep run with its start record."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import tcmplib.train
from tcmplib import cli
from tcmplib.model import GCNConfig
from tcmplib.profiles import PROFILES, Profile
from tcmplib.pruning import METHODS, PruneResult, prune
from tcmplib.run import STARTED_FILE, RunConfig, checkpointed_epochs, run_config
from tcmplib.train import build_model

SMALL = GCNConfig(nodes=6, d_in=8, heads=4, qk_dim=2, channels=16, classes=5)
# 10 epochs, a checkpoint every 2: a two-phase method's first phase (5 epochs) ends between
# checkpoints, so resuming in its second phase replays the end of the first.
TINY = Profile(
    name="resume-test", epochs=10, eval_every=2, checkpoint_every=2, description="tests only"
)
TWO_PHASE = {key for key, method in METHODS.items() if len(method.phases) == 2}


@dataclass(frozen=True)
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def make_data(n: int = 64) -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * n, SMALL.nodes, SMALL.d_in, generator=g)
    y = (
        x.reshape(2 * n, -1) @ torch.randn(SMALL.nodes * SMALL.d_in, SMALL.classes, generator=g)
    ).argmax(1)
    return Split(x[:n], y[:n], x[n:], y[n:])


def interrupt_after(monkeypatch: pytest.MonkeyPatch, saves: int) -> list[int]:
    """Make training raise KeyboardInterrupt right after its ``saves``-th checkpoint."""
    original: Callable[..., None] = tcmplib.train._save_checkpoint
    done: list[int] = []

    def save_then_maybe_stop(checkpoint_dir: Path, state: Any, *args: Any) -> None:
        original(checkpoint_dir, state, *args)
        done.append(state.epoch)
        if len(done) == saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(tcmplib.train, "_save_checkpoint", save_then_maybe_stop)
    return done


def record_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The epochs of the checkpoints training resumes from."""
    original: Callable[..., Any] = tcmplib.train._load_checkpoint
    loaded: list[int] = []

    def load(*args: Any) -> Any:
        state = original(*args)
        loaded.append(state.epoch)
        return state

    monkeypatch.setattr(tcmplib.train, "_load_checkpoint", load)
    return loaded


def numbers(report: Any) -> dict[str, Any]:
    data = report.to_dict()
    data.pop("wall_time_s")
    return data


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "method", sorted(k for k, m in METHODS.items() if m.tc_by_design is not None)
)
@pytest.mark.parametrize("saves", [1, 3])  # epoch 2 (first phase); epoch 6, or 2 of phase two
def test_an_interrupted_method_resumes_to_the_uninterrupted_result(
    method: str, saves: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_data()
    # The reference runs without checkpoints: writing them must not change a number either.
    reference = prune(method, build_model(SMALL, 0), data, 0.9, profile=TINY, progress=False)

    def checkpointed_run() -> PruneResult:  # from a fresh model, as a restarted process does
        return prune(
            method,
            build_model(SMALL, 0),
            data,
            0.9,
            profile=TINY,
            progress=False,
            checkpoint_dir=tmp_path,
        )

    stopped_at = interrupt_after(monkeypatch, saves)
    with pytest.raises(KeyboardInterrupt):
        checkpointed_run()
    monkeypatch.undo()
    phases = sorted(p.name for p in tmp_path.iterdir())
    if method in TWO_PHASE:
        assert phases == (["dense"] if saves == 1 else ["dense", "retrain"])
        assert stopped_at == ([2] if saves == 1 else [2, 4, 2])
    else:
        assert list(tmp_path.glob("ckpt-*.pt")) and stopped_at[-1] == 2 * saves

    loaded = record_loads(monkeypatch)
    resumed = checkpointed_run()
    # Two-phase, stopped in phase two: phase one resumes at 4 of 5 epochs, phase two at 2.
    assert loaded == ([4, 2] if method in TWO_PHASE and saves == 3 else [stopped_at[-1]])
    assert numbers(resumed.report) == numbers(reference.report)
    want, got = weights(reference.model), weights(resumed.model)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), f"{method}: weights differ"


def test_prune_refuses_checkpoints_with_a_profile_that_does_not_checkpoint(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="checkpoint_dir: .*'smoke' does not checkpoint"):
        prune(
            "mp", build_model(SMALL, 0), make_data(), 0.9, profile="smoke", checkpoint_dir=tmp_path
        )


# -------------------------------------------------------------------------------------------
# A sweep run
# -------------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_profile(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(PROFILES, TINY.name, TINY)
    return TINY.name


def _numbers(record: dict[str, Any]) -> dict[str, Any]:
    report = {k: v for k, v in record["report"].items() if k != "wall_time_s"}
    return {"report": report, "history": record["history"], "tensors": record["tensors"]}


def test_an_interrupted_sweep_run_resumes_and_cleans_up(
    tiny_profile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RunConfig(method="greedy-tc", rate=0.9, seed=1, profile=tiny_profile)
    reference = run_config(config, tmp_path / "a", device="cpu").to_json()
    assert reference["provenance"]["resumed"] is False

    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_config(config, tmp_path / "b", device="cpu", checkpoints_dir=tmp_path / "ckpt")
    run_dir = tmp_path / "ckpt" / config.name
    started = json.loads((run_dir / STARTED_FILE).read_text())
    assert set(started) == {"git", "resume_key"}
    assert not list((tmp_path / "b").glob("*.json")), "no result from an interrupted run"
    # 4 of the 5 dense epochs and 2 retraining epochs are behind it.
    assert checkpointed_epochs(tmp_path / "ckpt", config) == 6

    monkeypatch.undo()  # the interruption goes, and with it the fixture's profile
    monkeypatch.setitem(PROFILES, TINY.name, TINY)
    record = run_config(
        config, tmp_path / "b", device="cpu", checkpoints_dir=tmp_path / "ckpt"
    ).to_json()
    assert record["provenance"]["resumed"] is True
    assert record["provenance"]["git_commit"] == started["git"]["git_commit"]
    assert _numbers(record) == _numbers(reference)
    assert not run_dir.exists(), "the checkpoints go once the result is written"
    assert checkpointed_epochs(tmp_path / "ckpt", config) is None


def test_a_run_started_elsewhere_is_not_resumed(
    tiny_profile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RunConfig(method="mp", rate=0.9, seed=0, profile=tiny_profile)
    interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run_config(config, tmp_path / "r", device="cpu", checkpoints_dir=tmp_path / "ckpt")
    started_file = tmp_path / "ckpt" / config.name / STARTED_FILE
    started = json.loads(started_file.read_text())
    started["resume_key"]["device"] = "cpu (64 threads)"
    started_file.write_text(json.dumps(started))
    with pytest.raises(
        ValueError,
        match=r"started with other code or on another machine "
        r"\(device 'cpu \(64 threads\)' -> 'cpu \(",
    ):
        run_config(config, tmp_path / "r", device="cpu", checkpoints_dir=tmp_path / "ckpt")
    started_file.write_text("{}")
    with pytest.raises(ValueError, match="is not a run's start record"):
        run_config(config, tmp_path / "r", device="cpu", checkpoints_dir=tmp_path / "ckpt")


def test_profiles_without_checkpoints_write_none(tmp_path: Path) -> None:
    config = RunConfig(method="mp-oneshot", rate=0.9, seed=0, profile="smoke")
    record = run_config(config, tmp_path / "r", device="cpu", checkpoints_dir=tmp_path / "ckpt")
    assert record.to_json()["provenance"]["resumed"] is False
    assert not (tmp_path / "ckpt").exists()


def test_the_dry_run_says_which_runs_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = RunConfig(dataset="fpha", method="tcmp", rate=0.99, seed=2, profile="paper")
    run_dir = tmp_path / "ckpt" / config.name
    run_dir.mkdir(parents=True)
    (run_dir / "ckpt-001200.pt").write_bytes(b"")  # only the name is read
    args = ["sweep", "table1", "--profile", "paper", "--dataset", "fpha", "--seeds", "3"]
    args += ["--results", str(tmp_path / "r"), "--checkpoints", str(tmp_path / "ckpt")]
    assert cli.main([*args, "--dry-run"]) == 0
    assert f"  {config.name}\n" in capsys.readouterr().out, "no start record: not resumable"
    (run_dir / STARTED_FILE).write_text("{}")
    assert cli.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "0 done, 51 to run" in out
    assert f"  {config.name} (checkpointed: 1,200 of 2,700 epochs)\n" in out
    assert out.count("checkpointed") == 1
