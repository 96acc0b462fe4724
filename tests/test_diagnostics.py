"""Per-epoch traces: the trainer's observer, trace_run and spike_onsets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tcmplib.diagnostics import _accessibility_counts, spike_onsets, trace_run
from tcmplib.model import PRUNABLE
from tcmplib.pruning.masks import attach, psi
from tcmplib.pruning.tcmp import AccessibilityMask, AccessibilityNetworks
from tcmplib.topology import analyze
from tcmplib.train import TrainConfig, build_model, observing, train
from tests.test_train import TINY, params, stand_in


def test_observer_sees_every_epoch_and_changes_nothing() -> None:
    data = stand_in()
    config = TrainConfig(epochs=6, eval_every=3, device="cpu")
    plain = build_model(TINY, seed=1)
    reference = train(plain, data, config, progress=False)

    seen: list[tuple[dict[str, float], dict[str, torch.Tensor]]] = []

    def observe(row: dict[str, float], model: nn.Module) -> None:
        seen.append((row, params(model)))
        row["mutated"] = 1.0  # a copy: the trainer's history must not change

    observed = build_model(TINY, seed=1)
    with observing(observe):
        result = train(observed, data, config, progress=False)
    assert [row for row, _ in seen] != result.history  # the observer wrote into its copies
    assert result.history == reference.history
    assert [row["epoch"] for row, _ in seen] == [1, 2, 3, 4, 5, 6]
    for name, p in params(observed).items():
        assert torch.equal(p, params(plain)[name])
    assert torch.equal(seen[-1][1]["wv"], params(observed)["wv"])  # after the epoch's step
    train(build_model(TINY, seed=1), data, config, progress=False)  # the block has ended
    assert len(seen) == 6


def test_observing_rejects_what_it_cannot_call() -> None:
    with pytest.raises(TypeError, match="observing: observer"):
        with observing(42):  # type: ignore[arg-type]
            pass


def test_trace_stops_at_the_epoch_asked_and_measures_the_steps() -> None:
    data = stand_in()
    config = TrainConfig(epochs=12, eval_every=6, device="cpu")
    model = build_model(TINY, seed=0)
    start = {name: w.detach().clone() for name, w in model.prunable().items()}
    rows = trace_run("pmp", model, data, 0.5, train_config=config, stop_epoch=4)
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    for name in ("wq", "wk", "wv", "fc"):
        assert {f"step_mean_{name}", f"step_max_{name}", f"crossed_{name}"} <= rows[0].keys()
    # The first step, by hand: the latent weights after epoch 1 minus the initial ones.
    again = build_model(TINY, seed=0)
    one = trace_run("pmp", again, data, 0.5, train_config=config, stop_epoch=1)
    after = {name: w.detach() for name, w in again.prunable().items()}
    delta = (after["fc"] - start["fc"]).abs()
    assert one[0]["step_mean_fc"] == pytest.approx(float(delta.mean()))
    assert one[0]["step_max_fc"] == pytest.approx(float(delta.max()))
    assert one[0] == {k: v for k, v in rows[0].items()}  # stopping later changes nothing before


def test_trace_of_a_mask_without_a_threshold_has_no_crossings() -> None:
    rows = trace_run(
        "mp",
        build_model(TINY, seed=0),
        stand_in(),
        0.5,
        train_config=TrainConfig(epochs=4, eval_every=4, device="cpu"),
        stop_epoch=2,
    )
    assert len(rows) == 2 and not any(key.startswith("crossed_") for key in rows[0])


def test_trace_of_tcmp_counts_kept_and_ac_weights_per_tensor() -> None:
    config = TrainConfig(epochs=4, eval_every=4, device="cpu")
    rows = trace_run(
        "tcmp", build_model(TINY, seed=0), stand_in(), 0.5, train_config=config, stop_epoch=3
    )
    again = build_model(TINY, seed=0)
    trace_run("tcmp", again, stand_in(), 0.5, train_config=config, stop_epoch=3)
    # By hand, on the weights after the third step: psi >= 1/2 at that epoch's temperature,
    # then the A-C connections of that crisp mask.
    networks = again.parametrizations["fc"][0].networks
    temperature = networks.temperature
    crisp = {n: psi(w.detach(), temperature) >= 0.5 for n, w in again.prunable().items()}
    effective = analyze(crisp, again.config).effective_masks
    for name in ("wq", "wk", "wv", "fc"):
        assert rows[-1][f"kept_{name}"] == float(crisp[name].sum())
        assert rows[-1][f"kept_ac_{name}"] == float(effective[name].sum())
    assert len(rows) == 3 and "kept_ac_fc" in rows[0]


def test_accessibility_counts_miss_a_dead_channel() -> None:
    # TINY: wv (6, 4), fc (40, 3) with fc rows in (node, head, channel) order. Every weight
    # is far above the band except channel 0's value weights, which are 0: channel 0 carries
    # nothing, so its 5 nodes x 2 heads x 3 classes = 30 kept fc weights are not A-C.
    model = build_model(TINY, seed=0)
    with torch.no_grad():
        for w in model.prunable().values():
            w.fill_(1.0)
        model.wv[:, 0] = 0.0
    networks = AccessibilityNetworks(model.config, temperature=1e-4, tau=0.5)
    networks.bind(model.prunable())
    attach(model, {name: AccessibilityMask(name, networks) for name in PRUNABLE})
    networks.bind(model.prunable())
    counts = _accessibility_counts(model)
    assert counts == {
        "kept_wq": 36.0, "kept_ac_wq": 36.0,
        "kept_wk": 36.0, "kept_ac_wk": 36.0,
        "kept_wv": 18.0, "kept_ac_wv": 18.0,
        "kept_fc": 120.0, "kept_ac_fc": 90.0,
    }  # fmt: skip
    assert _accessibility_counts(build_model(TINY, seed=0)) == {}  # no TCMP mask: nothing


@pytest.mark.parametrize("stop", [0, 13, 2.5])
def test_trace_rejects_a_stop_epoch_outside_the_schedule(stop: object) -> None:
    with pytest.raises(ValueError, match=r"stop_epoch: expected an integer in \[1, 12\]"):
        trace_run(
            "pmp",
            build_model(TINY),
            stand_in(),
            0.5,
            train_config=TrainConfig(epochs=12, device="cpu"),
            stop_epoch=stop,  # type: ignore[arg-type]
        )


def _rows(accuracies: list[float]) -> list[dict[str, float]]:
    return [
        {
            "epoch": i + 1,
            "lr": 0.01 * (i + 1),
            "train_accuracy": a,
            "step_mean_wq": 0.1 * (i + 1),
            "step_mean_fc": 0.3 * (i + 1),
            "crossed_fc": float(i),
        }
        for i, a in enumerate(accuracies)
    ]


def test_spike_onsets_on_a_hand_worked_sequence() -> None:
    # Epochs:      1    2    3    4    5    6    7     8
    accuracy = [0.5, 1.0, 1.0, 0.3, 0.2, 1.0, 0.98, 0.995]
    spikes = spike_onsets(_rows(accuracy), before=2)
    assert [s["onset epoch"] for s in spikes] == [4, 7]  # epoch 1 is before the fit
    first, second = spikes
    assert first["lowest train accuracy"] == 0.2 and first["lowest epoch"] == 5
    assert first["recovered epoch"] == 6
    assert first["lr"] == pytest.approx(0.04)
    # Before the onset = epoch 3: mean over tensors of (0.3, 0.9); 2 epochs earlier = epoch 1.
    assert first["mean step before"] == pytest.approx(0.6)
    assert first["mean step 2 epochs earlier"] == pytest.approx(0.2)
    assert first["crossed before"] == 2.0 and first["crossed 2 epochs earlier"] == 0.0
    assert first["largest mean step in the spike"] == pytest.approx(1.0)  # epoch 5: (0.5+1.5)/2
    assert "largest alignment in the spike" not in first  # no method log of that name
    assert second["recovered epoch"] is None  # 0.995 is above the floor but not refitted
    assert second["lowest train accuracy"] == 0.98


def test_spike_onsets_follow_pmp_divergence_through_the_spike() -> None:
    rows = _rows([1.0, 1.0, 0.5, 0.6, 1.0, 1.0])
    for row, alignment in zip(rows, [0.4, 0.2, 0.1, 0.7, 0.9, 0.3], strict=True):
        row["alignment"] = alignment
    (spike,) = spike_onsets(rows, before=1)
    assert spike["alignment"] == 0.1  # at the onset, epoch 3
    assert spike["alignment 1 epochs earlier"] == 0.4  # epoch 1: one before the epoch before
    assert spike["largest alignment in the spike"] == 0.7  # epochs 3-4, not the recovery's


def test_no_spike_in_a_run_that_stays_fitted() -> None:
    assert spike_onsets(_rows([0.4, 1.0, 1.0, 0.995, 1.0])) == []


def test_trace_spikes_tabulates_every_trace_file(tmp_path) -> None:
    import json

    from tcmplib.diagnostics import trace_spikes

    def write(name: str, accuracies: list[float], lr_max: float) -> None:
        record = {
            "method": "pmp",
            "rate": 0.99,
            "seed": 0,
            "train_config": {"lr_max": lr_max},
            "rows": _rows(accuracies),
        }
        (tmp_path / name).write_text(json.dumps(record), encoding="utf-8")

    assert trace_spikes(tmp_path).empty
    write("trace_a.json", [0.5, 1.0, 0.2, 1.0, 0.1], 0.01)
    write("trace_b.json", [0.5, 1.0, 1.0], 0.002)
    table = trace_spikes(tmp_path)
    assert list(table["lr_max"]) == [0.01, 0.01, 0.002]
    assert list(table["onset epoch"].fillna(-1)) == [3, 5, -1]  # b: traced, no spike
    assert list(table["epochs traced"]) == [5, 5, 3]
    (tmp_path / "trace_c.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="trace_c.json: not a trace file"):
        trace_spikes(tmp_path)


def _reconnection_rows() -> list[dict[str, float]]:
    # Tensor a keeps 20 weights off A-C (a reservoir) until epoch 6 reconnects them; tensor
    # b's kept weights are all A-C and wander while the mask settles.
    b = {1: 100, 2: 98, 3: 100, 4: 99, 5: 102, 6: 90, 7: 130, 8: 110}
    rows = []
    for epoch, kept_b in b.items():
        rows.append(
            {
                "epoch": float(epoch),
                "kept_a": 20.0,
                "kept_ac_a": 20.0 if epoch >= 6 else 0.0,
                "kept_b": float(kept_b),
                "kept_ac_b": float(kept_b),
                "step_max_a": 0.2 if epoch == 4 else 0.1,
                "step_max_b": 0.1 if epoch == 4 else 0.01,
            }
        )
    return rows


def test_reconnection_finds_the_rise_and_the_reservoir_it_came_from():
    from tcmplib.diagnostics import Reconnection, reconnection

    found = reconnection(_reconnection_rows(), tolerance=0.05, lead=3)
    assert found is not None
    # Counts 100, 98, 100, 99, 102, 110, 150, 130: the plateau is 98 (epoch 2), 102 is within
    # 5% of it, 110 is not: onset at epoch 6. The lowest count of the 3 epochs before is 99
    # (epoch 4), so the rise starts at epoch 5 and "before" is epoch 4, 3 epochs after epoch 1.
    assert (found.onset, found.start, found.plateau, found.lead) == (6, 5, 98, 3)
    assert [found.before["epoch"], found.peak["epoch"], found.end["epoch"]] == [4, 7, 8]
    assert Reconnection.kept_ac(found.before) == 99 and Reconnection.kept(found.before) == 119
    a, b = found.tensors
    assert a == {
        "tensor": "a",
        "kept before": 20,
        "A-C before": 0,
        "kept at the peak": 20,
        "A-C at the peak": 20,
        "kept at the end": 20,
        "A-C at the end": 20,
        "step growth": 2.0,
    }
    assert (b["A-C before"], b["A-C at the peak"], b["A-C at the end"]) == (99, 130, 110)
    assert b["step growth"] == pytest.approx(10.0)


def test_reconnection_none_without_a_rise_or_counts_and_rejects_bad_arguments():
    from tcmplib.diagnostics import reconnection

    rows = _reconnection_rows()
    assert reconnection(rows[:5], tolerance=0.05, lead=3) is None  # 102 <= 98 * 1.05
    assert reconnection(rows, tolerance=0.6) is None  # 150 <= 98 * 1.6
    assert reconnection([{"epoch": 1.0, "loss": 1.0}, {"epoch": 2.0, "loss": 0.5}]) is None
    with pytest.raises(ValueError, match="tolerance"):
        reconnection(rows, tolerance=0.0)
    with pytest.raises(ValueError, match="lead"):
        reconnection(rows, lead=0)


def test_differing_epochs_compares_shared_epochs_and_keys_exactly():
    from tcmplib.diagnostics import differing_epochs

    rows = [{"epoch": float(e), "loss": 1.0 / e, "hard_rate": 0.5} for e in range(1, 5)]
    history = [
        {"epoch": 2.0, "loss": 0.5, "hard_rate": 0.5, "test_class_avg_accuracy": 0.7},  # equal
        {"epoch": 4.0, "loss": 0.25, "hard_rate": 0.5000001},  # one key differs
        {"epoch": 6.0, "loss": 1.0},  # not traced
        {"epoch": 3.0, "test_loss": 2.0},  # no key in common
    ]
    assert differing_epochs(rows, history) == (2, [4])
    assert differing_epochs(rows, history, keys=("loss",)) == (2, [])


def test_consistency_pull_grows_the_weights_that_would_reconnect_a_dead_channel() -> None:
    from tcmplib.diagnostics import consistency_pull

    # TINY: every weight at 1 (psi = 1, saturated) except channel 0's fc rows (rows
    # 0, 4, 8, ...: (node, head, channel) order), set below the band: channel 0 reaches no
    # class, so wv's column 0 (6 weights) is kept but off A-C. The consistency term is those
    # 6 weights' psi over N = 216 weights, and the only way its gradient can lower it is by
    # growing the pruned fc weights that would give channel 0 its path.
    temperature = 1e-4
    model = build_model(TINY, seed=0)
    weights = {name: torch.ones_like(w) for name, w in model.prunable().items()}
    dead = [row for row in range(weights["fc"].shape[0]) if row % TINY.channels == 0]
    weights["fc"][dead] = 0.5 * (temperature * math.log(3)) ** 0.5
    rows = {(r["tensor"], r["kind"]): r for r in consistency_pull(weights, TINY, temperature)}
    assert rows[("wv", "kept, off A-C")]["weights"] == 6
    assert rows[("wv", "kept, A-C")]["weights"] == 18
    assert rows[("fc", "pruned")]["weights"] == 30
    assert rows[("fc", "pruned")]["mean pull"] > 0  # grow: reconnect channel 0
    assert rows[("wv", "kept, off A-C")]["largest pull"] == 0.0  # saturated: cannot shrink
    for name in ("wq", "wk", "wv", "fc"):
        assert rows[(name, "kept, A-C")]["largest pull"] == 0.0
    assert torch.equal(weights["wv"], torch.ones_like(weights["wv"]))  # inputs unchanged
    with pytest.raises(ValueError, match="weights: expected the tensors"):
        consistency_pull({"wq": weights["wq"]}, TINY, temperature)
