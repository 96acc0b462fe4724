"""The pruning entry point, magnitude pruning (relaxed and one-shot) and PMP, on tiny runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from tcmplib.model import PRUNABLE, GCNConfig
from tcmplib.pruning import METHODS, PruneResult, prune
from tcmplib.pruning.mp import linear_temperature, project_top_k
from tcmplib.pruning.pmp import Prior, band_stop, geometric_steepness, magnitude_order
from tcmplib.run import RunConfig
from tcmplib.topology import analyze, masks_from_model
from tcmplib.train import TrainConfig, build_model

TINY = GCNConfig(nodes=4, d_in=6, heads=2, qk_dim=3, channels=8, classes=5)
OURS = ("mp", "mp-oneshot", "pmp")


@dataclass(frozen=True)
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def make_data(config: GCNConfig, n: int = 40, seed: int = 0) -> Data:
    """Class-dependent Gaussian node signals: learnable, tiny, deterministic."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(config.classes, config.nodes, config.d_in, generator=gen)

    def split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(count) % config.classes
        x = centres[y] + 0.5 * torch.randn(count, config.nodes, config.d_in, generator=gen)
        return x, y

    x_train, y_train = split(n)
    x_test, y_test = split(n // 2)
    return Data(x_train, y_train, x_test, y_test)


TINY_DATA = make_data(TINY)


def smoke_config(method: str, recipe: str = "as-written", **options: object) -> RunConfig:
    """A run at 99% on the synthetic data at the smoke profile, with method ``options``."""
    return RunConfig(
        dataset="synthetic", method=method, rate=0.99, seed=0, profile="smoke",
        recipe=recipe, options=options,
    )  # fmt: skip


@pytest.mark.parametrize("method", OURS)
@pytest.mark.parametrize("rate", [0.5, 0.75, 0.95, 0.99])
def test_every_method_reaches_the_target_rate(method: str, rate: float) -> None:
    result = prune(method, build_model(TINY), TINY_DATA, rate, profile="smoke", progress=False)
    report = result.report
    assert abs(report.achieved_rate - rate) <= 0.005
    # the report counts what the model computes with
    kept = sum(int(m.sum()) for m in masks_from_model(result.model).values())
    assert report.kept_weights == kept == round((1 - rate) * TINY.num_weights())
    assert report.total_weights == TINY.num_weights()
    assert 0.0 <= report.class_avg_accuracy <= 1.0
    assert report.method == method and report.options


@pytest.mark.parametrize("budget", ["kept", "soft"])
def test_relaxed_mp_logs_its_schedule_and_budget(budget: str) -> None:
    report = prune(
        "mp", build_model(TINY), TINY_DATA, 0.9, profile="smoke", progress=False, budget=budget
    ).report
    temperatures = [row["temperature"] for row in report.history]
    assert temperatures == sorted(temperatures, reverse=True)
    assert temperatures[-1] == pytest.approx(report.details["t0"] * report.options["t_end_ratio"])
    n, c = TINY.num_weights(), round(0.1 * TINY.num_weights())
    for row in report.history:
        assert {"soft_kept", "soft_rate", "hard_rate", "budget"} <= set(row)
        if budget == "soft":  # revisions 1-3: the soft rate's gap, over all weights
            gap = (row["soft_kept"] - c) / n
        else:  # revision 4: the crisp count's gap, relative to the budget
            gap = ((1.0 - row["hard_rate"]) * n - c) / c
        assert row["budget"] == pytest.approx(10.0 * gap**2, rel=1e-4)
    with pytest.raises(ValueError, match="MPOptions.budget"):
        METHODS["mp"].options_class(budget="hard")


def test_relaxed_mp_kept_budget_pulls_only_weights_near_the_threshold() -> None:
    # The crisp count's gradient is the STE's: largest for psi near 1/2, vanishing far from
    # it, and pushing down (more pruning) when more than c weights are kept.
    from tcmplib.pruning.masks import RelaxedMagnitudeMask
    from tcmplib.pruning.mp import _Budget, _RelaxedMPHook

    model = build_model(TINY)
    weights = model.prunable()
    temperature = 0.01  # psi(w) = 1/2 at |w| = sqrt(T ln 3) = 0.105
    masks = {name: RelaxedMagnitudeMask(temperature) for name in PRUNABLE}
    with torch.no_grad():
        weights["fc"].fill_(1.0)  # far above the threshold: every weight kept
        weights["fc"][0, 0] = 0.105  # one weight at the threshold
        weights["fc"][0, 1] = 1e-4  # one far below it
    from tcmplib.pruning.masks import attach

    attach(model, masks)
    size = sum(w.numel() for w in weights.values())
    hook = _RelaxedMPHook(
        masks, [_Budget(PRUNABLE, 10, size, temperature, temperature)], size, 10.0, 2.0, False
    )
    loss, _ = hook.extra_loss(model)
    loss.backward()
    grad = model.parametrizations.fc.original.grad
    assert grad[0, 0] > 0, "too many kept: the weight at the threshold is pushed down"
    assert abs(float(grad[0, 0])) > 100 * abs(float(grad[0, 1]))
    assert abs(float(grad[0, 0])) > 100 * abs(float(grad[1, 0]))


@pytest.mark.parametrize("method", ["mp", "tcmp"])
def test_relaxed_methods_keep_the_learning_rate_inside_the_band(method: str) -> None:
    # lr 1 would let every step cross the band |w| < sqrt(T ln 3) (|w| < 1 at init here).
    config = TrainConfig(epochs=6, eval_every=6, lr=1.0, lr_max=10.0)
    gcn = build_model(TINY)
    assert max(float(w.detach().abs().max()) for w in gcn.prunable().values()) < 1.0
    report = METHODS[method]().run(gcn, TINY_DATA, 0.9, train_config=config, progress=False).report
    bounded = 0
    for row in report.history:
        band = math.sqrt(row["temperature"] * math.log(3.0))
        assert row["lr"] <= band / report.options["band_steps"] * (1 + 1e-12)
        bounded += row["lr"] < 1.0
    assert bounded == len(report.history)  # the ceiling acted at every epoch here


def test_linear_temperature_ends_where_it_should() -> None:
    assert linear_temperature(1, 5, 1.0, 0.01) == 1.0
    assert linear_temperature(5, 5, 1.0, 0.01) == pytest.approx(0.01)
    assert linear_temperature(3, 5, 1.0, 0.0) == pytest.approx(0.5)


def test_one_shot_mp_at_99_percent_disconnects_the_full_size_gcn() -> None:
    """At 99% the 19,676 kept weights cannot cover the 32,256 attention and conv weights
    and the dense layer together: global magnitude pruning leaves dead connections."""
    config = GCNConfig()
    data = make_data(config, n=2 * config.classes)
    result = prune("mp-oneshot", build_model(config), data, 0.99, profile="smoke", progress=False)
    report = result.report
    assert report.kept_weights == 19_676
    assert report.percent_ac < 100.0
    assert not report.topologically_consistent
    assert report.percent_ac == pytest.approx(analyze(masks_from_model(result.model)).percent_ac)


@pytest.mark.parametrize("method", OURS)
def test_same_seed_same_report(method: str) -> None:
    def run() -> dict[str, object]:
        report = prune(
            method,
            build_model(TINY, seed=3),
            TINY_DATA,
            0.8,
            profile="smoke",
            seed=5,
            progress=False,
        ).report
        data = report.to_dict()
        del data["wall_time_s"]
        return data

    assert run() == run()


@pytest.mark.parametrize("rate", [-0.1, 1.0, math.nan, "0.5", True])
def test_bad_rates_are_rejected_clearly(rate: object) -> None:
    with pytest.raises(ValueError, match=r"^rate: expected"):
        prune("mp", build_model(TINY), TINY_DATA, rate, profile="smoke")  # type: ignore[arg-type]


def test_unknown_method_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="method: expected one of") as err:
        prune("magnitude", build_model(TINY), TINY_DATA, 0.5, profile="smoke")
    for name in (*OURS, *METHODS):
        assert name in str(err.value)


def test_unknown_option_and_profile_are_named() -> None:
    with pytest.raises(ValueError, match=r"mp: unknown option\(s\) 'lambda'"):
        prune("mp", build_model(TINY), TINY_DATA, 0.5, profile="smoke", **{"lambda": 3.0})
    with pytest.raises(ValueError, match="profile: expected one of"):
        prune("mp", build_model(TINY), TINY_DATA, 0.5, profile="fast")
    with pytest.raises(ValueError, match="PMPOptions.prior: expected one of"):
        prune("pmp", build_model(TINY), TINY_DATA, 0.5, profile="smoke", prior="cauchy")


def test_projection_keeps_exactly_the_largest_magnitudes() -> None:
    model = build_model(TINY)
    before = {n: w.detach().clone() for n, w in model.prunable().items()}
    masks = project_top_k(model, 100)
    kept = torch.cat([before[n].abs()[masks[n]] for n in PRUNABLE])
    pruned = torch.cat([before[n].abs()[~masks[n]] for n in PRUNABLE])
    assert kept.numel() == 100 and float(kept.min()) >= float(pruned.max())
    for name in PRUNABLE:  # the model computes with the kept weights only, unchanged
        assert torch.equal(getattr(model, name).detach(), before[name] * masks[name])


def test_one_shot_history_covers_both_phases() -> None:
    report = prune(
        "mp-oneshot", build_model(TINY), TINY_DATA, 0.75, profile="smoke", progress=False
    ).report
    assert [row["phase"] for row in report.history] == [0.0, 0.0, 1.0, 1.0]
    assert [row["epoch"] for row in report.history] == [1, 2, 3, 4]
    assert report.details["dense_epochs"] == 2


def test_pmp_band_stop_and_prior_quantiles() -> None:
    w = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    mask = band_stop(w, 1.0, 50.0)
    assert mask.tolist() == pytest.approx([1.0, 0.5, 0.0, 0.5, 1.0], abs=1e-9)
    assert torch.equal(band_stop(w, 0.0, 50.0), torch.ones_like(w))  # rate 0 removes nothing
    gauss, laplace = Prior("gaussian", 2.0), Prior("laplace", 2.0)
    assert gauss.threshold(0.95) == pytest.approx(2.0 * 1.959964, rel=1e-6)
    assert laplace.threshold(0.95) == pytest.approx(-2.0 * math.log(0.05))
    assert geometric_steepness(1, 3, 4.0, 400.0) == 4.0
    assert geometric_steepness(2, 3, 4.0, 400.0) == pytest.approx(40.0)


def test_pmp_per_tensor_scope_prunes_every_tensor_at_the_rate() -> None:
    result = prune(
        "pmp",
        build_model(TINY),
        TINY_DATA,
        0.75,
        profile="smoke",
        progress=False,
        scope="per-tensor",
        prior="laplace",
    )
    for name, mask in masks_from_model(result.model).items():
        assert int(mask.sum()) == round(0.25 * mask.numel()), name
    report = result.report
    assert set(report.details) >= {"threshold_rate", "threshold_fc", "prior_scale_wq"}
    assert 0.0 <= report.details["threshold_rate"] <= 1.0
    assert {"steepness", "alignment", "threshold_rate", "soft_rate"} <= set(report.history[0])


def test_pmp_meets_the_budget_when_the_band_swallows_more_than_the_rate() -> None:
    # On the full-size GCN the alignment pulls most weights inside the band within a few
    # epochs, where psi underflows to exactly 0: the final network must still keep exactly
    # the budget, not the fewer nonzeros of the baked weights.
    config = GCNConfig()
    result = prune(
        "pmp", build_model(config), make_data(config), 0.95, profile="smoke", progress=False
    )
    report = result.report
    assert report.details["threshold_rate"] > 0.95, "the case under test did not arise"
    assert report.kept_weights == round(0.05 * config.num_weights())


def test_magnitude_order_sorts_like_the_floats_ties_and_zeros_included() -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(5000, generator=generator).abs()
    values[::7] = 0.0
    values[1::11] = values[3]  # ties
    values[2] = -0.0  # abs() of a negative zero, as PMP's flattened |w| may hold
    order = magnitude_order(values.abs())
    assert torch.equal(values.abs()[order], torch.sort(values.abs()).values)
    assert torch.equal(torch.sort(order).values, torch.arange(5000))  # a permutation
    as_double = values.abs().double()
    assert torch.equal(as_double[magnitude_order(as_double)], torch.sort(as_double).values)


def test_band_stop_floor_zeroes_only_values_below_it() -> None:
    floor = METHODS["pmp"].options_class().mask_floor
    w = torch.tensor([0.0, 0.05, 0.099, 0.1, 0.2, -0.2])
    soft = band_stop(w, threshold=0.1, steepness=60.0)
    floored = band_stop(w, threshold=0.1, steepness=60.0, floor=floor)
    assert soft[0] > 0.0 and floored[0] == 0.0  # deep in the stop band: ~2e-26 -> 0
    kept = soft >= floor
    assert torch.equal(floored[kept], soft[kept])
    with pytest.raises(ValueError, match="PMPOptions.mask_floor"):
        METHODS["pmp"].options_class(mask_floor=1.0)


def test_pmp_latent_weights_are_exempt_from_weight_decay_unless_asked() -> None:
    # Large steps and a decay that swamps the alignment: on the latent weights it shrinks
    # them into the stop band, and the hard mask |w| >= a(r) removes far more than r.
    def threshold_rate(latent_decay: bool) -> float:
        result = prune(
            "pmp",
            build_model(TINY),
            TINY_DATA,
            0.5,
            profile="smoke",
            progress=False,
            train_overrides={"weight_decay": 10.0, "lr": 0.05, "lr_max": 0.05},
            latent_decay=latent_decay,
        )
        return float(result.report.details["threshold_rate"])

    exempt, decayed = threshold_rate(False), threshold_rate(True)
    assert decayed > 0.8 and exempt < 0.6
    with pytest.raises(ValueError, match="PMPOptions.latent_decay"):
        METHODS["pmp"].options_class(latent_decay=1)


def test_relaxed_mp_masked_weights_are_exempt_from_weight_decay_unless_asked() -> None:
    # Every parameter of the tiny network is masked, so with the exemption a decay of any
    # strength changes nothing: the run is the run without decay, bit for bit. With the
    # decay on them (revision 2) it pulls the soft rate above the exempt run's, epoch by epoch.
    def soft_rates(weight_decay: float, masked_decay: bool) -> list[float]:
        report = prune(
            "mp",
            build_model(TINY),
            TINY_DATA,
            0.5,
            profile="smoke",
            progress=False,
            train_overrides={"weight_decay": weight_decay, "epochs": 20},
            masked_decay=masked_decay,
        ).report
        return [row["soft_rate"] for row in report.history]

    undecayed = soft_rates(0.0, masked_decay=False)
    assert soft_rates(10.0, masked_decay=False) == undecayed
    decayed = soft_rates(10.0, masked_decay=True)
    assert all(d > u for d, u in zip(decayed[1:], undecayed[1:], strict=True))
    with pytest.raises(ValueError, match="MPOptions.masked_decay"):
        METHODS["mp"].options_class(masked_decay="no")


def test_mp_decay_option_is_in_the_identity_only_where_it_can_change_a_number() -> None:
    def config(recipe: str, **options: bool) -> RunConfig:
        return smoke_config("mp", recipe, **options)

    # No weight decay in the recipe: both settings are one computation, under one name.
    assert config("as-written").hash == config("as-written", masked_decay=False).hash
    assert "masked_decay" not in config("as-written").identity()["options"]
    # With weight decay: the exemption (revision 3's) is named; the default, as the records
    # before the option ran, is left out.
    exempt, decayed = config("selected", masked_decay=False), config("selected")
    assert exempt.identity()["options"]["masked_decay"] is False
    assert "masked_decay" not in decayed.identity()["options"]
    assert exempt.hash != decayed.hash


def test_mp_budget_option_keeps_the_soft_budget_records_names() -> None:
    soft, kept = smoke_config("mp", budget="soft"), smoke_config("mp")
    assert "budget" not in soft.identity()["options"]  # as revisions 1-3 were named
    assert kept.identity()["options"]["budget"] == "kept"
    assert kept.hash != soft.hash


def prune_per_tensor(method: str) -> PruneResult:
    """``method`` at 75% per tensor on the tiny network; every tensor within its budget."""
    from tcmplib.pruning.masks import keep_count

    result = prune(
        method, build_model(TINY), TINY_DATA, 0.75, profile="smoke", progress=False,
        scope="per-tensor",
    )  # fmt: skip
    shapes = TINY.weight_shapes()
    for name, mask in masks_from_model(result.model).items():
        assert int(mask.sum()) <= keep_count(math.prod(shapes[name]), 0.75)
    return result


def test_one_shot_mp_per_tensor_prunes_every_tensor_at_the_rate() -> None:
    result = prune_per_tensor("mp-oneshot")
    assert result.report.options["scope"] == "per-tensor"
    with pytest.raises(ValueError, match="OneShotOptions.scope"):
        METHODS["mp-oneshot"].options_class(scope="layer")


def test_relaxed_mp_per_tensor_meets_every_tensors_budget() -> None:
    result = prune_per_tensor("mp")
    assert {"t0_wq", "t0_fc", "initial_threshold_wv"} <= set(result.report.details)
    with pytest.raises(ValueError, match="MPOptions.scope"):
        METHODS["mp"].options_class(scope="layer")


def test_an_option_added_later_stays_out_of_the_identity_at_its_default() -> None:
    from tcmplib.run import RunConfig

    plain = RunConfig(dataset="synthetic", method="mp", rate=0.99, seed=0, profile="smoke")
    scoped = RunConfig(
        dataset="synthetic", method="mp", rate=0.99, seed=0, profile="smoke",
        options={"scope": "per-tensor"},
    )  # fmt: skip
    assert "scope" not in plain.identity()["options"]
    assert scoped.identity()["options"]["scope"] == "per-tensor"
    assert scoped.hash != plain.hash
    assert "budget_weight" in plain.identity()["options"], "the other options all stay"


def test_a_changed_default_keeps_the_old_records_names_one_setting_away() -> None:
    revision_1, revision_2 = smoke_config("pmp", threshold="prior"), smoke_config("pmp")
    assert "threshold" not in revision_1.identity()["options"]  # as its records were named
    assert revision_2.identity()["options"]["threshold"] == "rank"
    assert revision_2.hash != revision_1.hash
    with pytest.raises(ValueError, match="PMPOptions.threshold"):
        METHODS["pmp"].options_class(threshold="quantile")


def test_pmp_band_follows_the_budgets_ranks_by_hand() -> None:
    from tcmplib.pruning.pmp import _Group

    w = torch.nn.Parameter(torch.tensor([0.1, -0.5, 0.3, 0.9, -0.2, 0.7]))
    weights = {"w": w}
    group = _Group(("w",), Prior("gaussian", 1.0), rate=4 / 6, size=6, keep=2)
    # |w| sorted: 0.1 0.2 0.3 0.5 | 0.7 0.9: the band sits between 0.5 and 0.7.
    assert group.follow_ranks(weights) == pytest.approx(0.6)
    mask = band_stop(w.detach(), group.band, 200.0)
    assert (mask > 0.5).tolist() == [False, False, False, True, False, True]
    with torch.no_grad():
        w.mul_(2.0)  # an in-place update (an optimizer step): the order is sorted again
    assert group.follow_ranks(weights) == pytest.approx(1.2)
    everything = _Group(("w",), Prior("gaussian", 1.0), rate=0.5, size=6, keep=6)
    assert everything.follow_ranks(weights) == 0.0  # keeps every weight: no band
    with pytest.raises(ValueError, match="budget in 1..6"):
        _Group(("w",), Prior("gaussian", 1.0), rate=0.5, size=6, keep=0)


def test_pmp_rank_band_stops_what_the_hard_mask_removes() -> None:
    # Revision 2 trains under the mask it keeps: at the last epoch the soft mask removes
    # the budget's share, while the band at the prior's a(r) (revision 1) can stop far fewer.
    config = GCNConfig()
    data = make_data(config)

    def last_row(threshold: str) -> dict[str, float]:
        result = prune(
            "pmp", build_model(config), data, 0.95, profile="smoke", progress=False,
            threshold=threshold,
        )  # fmt: skip
        return result.report.history[-1]

    rank, prior = last_row("rank"), last_row("prior")
    assert abs(rank["soft_rate"] - 0.95) < abs(prior["soft_rate"] - 0.95)
    assert rank["band_threshold"] != 1.0 and prior["band_threshold"] == 1.0


def test_pmp_rank_band_sorts_once_per_full_batch_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    # The band's threshold and the step's alignment read one sort of the magnitudes.
    from tcmplib.pruning import pmp

    calls = []

    def counted(magnitudes: torch.Tensor) -> torch.Tensor:
        calls.append(magnitudes.numel())
        return magnitude_order(magnitudes)

    monkeypatch.setattr(pmp, "magnitude_order", counted)
    result = prune("pmp", build_model(TINY), TINY_DATA, 0.75, profile="smoke", progress=False)
    epochs = result.report.history[-1]["epoch"]
    assert len(calls) == epochs and set(calls) == {TINY.num_weights()}
