"""The shared trainer: adaptive learning rate, metrics, determinism, checkpoints, hooks, CLI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from tcmplib.cli import main as cli_main
from tcmplib.model import AttentionGCN, GCNConfig
from tcmplib.profiles import PROFILES, get_profile, profile_from_env
from tcmplib.train import (
    NoOpHook,
    TrainConfig,
    adapt_lr,
    anneal_factor,
    build_model,
    config_hash,
    evaluate,
    train,
)

TINY = GCNConfig(nodes=5, d_in=6, heads=2, qk_dim=3, channels=4, classes=3)


@dataclass(frozen=True)
class StandIn:
    """Random data of the dataset's shapes (the trainer only reads these four fields)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def stand_in(n_train: int = 48, n_test: int = 24) -> StandIn:
    g = torch.Generator().manual_seed(0)
    return StandIn(
        x_train=torch.randn(n_train, TINY.nodes, TINY.d_in, generator=g),
        y_train=torch.randint(0, TINY.classes, (n_train,), generator=g),
        x_test=torch.randn(n_test, TINY.nodes, TINY.d_in, generator=g),
        y_test=torch.randint(0, TINY.classes, (n_test,), generator=g),
    )


def params(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --- adaptive learning rate ----------------------------------------------------------------


def test_adapt_lr_on_a_hand_worked_loss_sequence() -> None:
    # factor 0.5 keeps the arithmetic exact; lr_max = 3e-3 caps the rises.
    losses = [1.0, 0.9, 0.95, 0.8, 0.8, 0.7, 0.6, 0.65]
    expected_next = [1e-3, 2e-3, 1e-3, 2e-3, 2e-3, 3e-3, 3e-3, 1.5e-3]
    #               first  fell  rose  fell  same  fell,capped  capped  rose
    lr, previous = 1e-3, None
    for loss, want in zip(losses, expected_next, strict=True):
        lr = adapt_lr(lr, loss, previous, factor=0.5, lr_max=3e-3)
        previous = loss
        assert lr == pytest.approx(want, rel=1e-12)


def test_adapt_lr_with_the_papers_factor_stops_at_the_cap() -> None:
    # Uncapped, 100 falling epochs give 1e-3 / 0.99**100 = 2.73e-3; the cap 2e-3 is reached
    # after ceil(log 2 / -log 0.99) = 69 falls and then holds.
    lr, rates = 1e-3, []
    for step in range(100):
        lr = adapt_lr(lr, 1.0 - step * 1e-3, 1.0 - (step - 1) * 1e-3, factor=0.99, lr_max=2e-3)
        rates.append(lr)
    first_capped = rates.index(2e-3)
    assert first_capped + 1 == math.ceil(math.log(2) / -math.log(0.99)) == 69
    assert rates[first_capped - 1] == pytest.approx(1e-3 / 0.99**68)
    assert all(r == 2e-3 for r in rates[first_capped:])


def test_history_lr_follows_the_rule_on_the_total_loss() -> None:
    cfg = TrainConfig(epochs=12, lr=1e-2, lr_max=1.5e-2, eval_every=4)
    result = train(build_model(TINY, 0), stand_in(), cfg, progress=False)
    rows = result.history
    assert rows[0]["lr"] == cfg.lr
    for t in range(1, len(rows)):
        before = rows[t - 2]["loss"] if t >= 2 else None
        assert rows[t]["lr"] == adapt_lr(
            rows[t - 1]["lr"], rows[t - 1]["loss"], before, factor=cfg.lr_factor, lr_max=cfg.lr_max
        )


# --- metrics -------------------------------------------------------------------------------


class FixedLogits(nn.Module):
    """Returns its input as logits (evaluate needs one parameter to find the device)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return x


def test_class_averaged_and_plain_accuracy_differ_on_a_hand_worked_example() -> None:
    # Class 0: 4 samples, all right; class 1: 2 samples, 1 right; class 2: no sample (skipped).
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    predicted = torch.tensor([0, 0, 0, 0, 0, 1])
    logits = nn.functional.one_hot(predicted, num_classes=3).float()
    metrics = evaluate(FixedLogits(), logits, y)
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert metrics["class_avg_accuracy"] == pytest.approx((4 / 4 + 1 / 2) / 2)


def test_evaluate_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="evaluate: expected x of N samples"):
        evaluate(FixedLogits(), torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))


# --- determinism and checkpoints -----------------------------------------------------------


def test_same_seed_gives_bit_identical_weights_and_history() -> None:
    cfg = TrainConfig(epochs=6, batch_size=16, eval_every=3, seed=5)
    runs = []
    for _ in range(2):
        model = build_model(TINY, seed=1)
        runs.append((train(model, stand_in(), cfg, progress=False), params(model)))
    (first, w1), (second, w2) = runs
    assert first.history == second.history
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    other = build_model(TINY, seed=1)
    train(
        other,
        stand_in(),
        TrainConfig(epochs=6, batch_size=16, eval_every=3, seed=6),
        progress=False,
    )
    assert not torch.equal(params(other)["fc"], w1["fc"])  # the seed orders the batches


class Scale(nn.Module):
    """A stand-in for a pruning parametrization: weight * a fixed mask buffer."""

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


class NoisyHook(NoOpHook):
    """Draws from the global RNG every step (as a stochastic pruning method might)."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        if epoch == self.stop_at:
            raise KeyboardInterrupt  # simulates a run killed before this epoch

    def extra_loss(self, model: nn.Module) -> tuple[Tensor, dict[str, float]]:
        assert isinstance(model, AttentionGCN)
        noise = 1e-3 * torch.rand(())
        return noise * model.wv.square().sum(), {"noise": float(noise)}


def masked_model(seed: int) -> AttentionGCN:
    model = build_model(TINY, seed=seed)
    mask = (torch.arange(model.fc.numel()) % 3 != 0).float().reshape(model.fc.shape)
    parametrize.register_parametrization(model, "fc", Scale(mask))
    return model


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=8, batch_size=20, eval_every=2, checkpoint_every=3, seed=2)
    reference = masked_model(seed=0)
    full = train(reference, stand_in(), cfg, hook=NoisyHook(), progress=False)

    interrupted = masked_model(seed=0)
    with pytest.raises(KeyboardInterrupt):
        train(
            interrupted,
            stand_in(),
            cfg,
            hook=NoisyHook(stop_at=5),
            progress=False,
            checkpoint_dir=tmp_path,
        )
    assert [p.name for p in tmp_path.glob("ckpt-*.pt")] == ["ckpt-000003.pt"]

    resumed_model = masked_model(
        seed=99
    )  # different init: everything must come from the checkpoint
    resumed = train(
        resumed_model, stand_in(), cfg, hook=NoisyHook(), progress=False, checkpoint_dir=tmp_path
    )
    assert resumed.resumed_from_epoch == 3
    assert resumed.history == full.history
    assert resumed.test == full.test
    want, got = params(reference), params(resumed_model)
    assert want.keys() == got.keys() and "parametrizations.fc.original" in got
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert [p.name for p in tmp_path.glob("ckpt-*.pt")] == ["ckpt-000006.pt"]


def test_checkpoints_of_another_config_are_refused(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=2, eval_every=1, checkpoint_every=1)
    train(build_model(TINY, 0), stand_in(), cfg, progress=False, checkpoint_dir=tmp_path)
    other = TrainConfig(epochs=3, eval_every=1, checkpoint_every=1)
    with pytest.raises(ValueError, match="checkpoint_dir: .* belongs to another run"):
        train(build_model(TINY, 0), stand_in(), other, progress=False, checkpoint_dir=tmp_path)


# --- hooks ---------------------------------------------------------------------------------


class RisingPenalty(NoOpHook):
    """A penalty that grows by 10 per epoch, so the *total* loss rises although the CE falls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        self.epoch = epoch
        self.calls.append(("start", epoch))

    def extra_loss(self, model: nn.Module) -> tuple[Tensor, dict[str, float]]:
        penalty = torch.tensor(10.0 * self.epoch)
        return penalty, {"penalty": float(penalty), "temperature": 1.0 / self.epoch}

    def on_train_end(self, model: nn.Module) -> None:
        self.calls.append(("end", -1))


def test_hook_extra_loss_and_logs_reach_the_history_and_the_lr_rule() -> None:
    hook = RisingPenalty()
    cfg = TrainConfig(epochs=5, eval_every=5)
    result = train(build_model(TINY, 0), stand_in(), cfg, hook=hook, progress=False)
    assert hook.calls == [("start", e) for e in range(1, 6)] + [("end", -1)]
    for row in result.history:
        epoch = row["epoch"]
        assert row["penalty"] == 10.0 * epoch
        assert row["temperature"] == pytest.approx(1.0 / epoch)
        assert row["loss"] == pytest.approx(row["ce"] + row["penalty"])
        # The total loss rose at every epoch after the first, so the rate fell each time.
        assert row["lr"] == pytest.approx(1e-3 * 0.99 ** max(epoch - 2, 0))
    assert "test_class_avg_accuracy" in result.history[-1]
    assert "test_accuracy" not in result.history[0]


class Ceiling(NoOpHook):
    """Caps the learning rate at 1.2e-3 from epoch 4 on, 1e-3 / 2 from epoch 7 on."""

    def lr_ceiling(self, epoch: int, epochs: int) -> float:
        return math.inf if epoch < 4 else 1.2e-3 if epoch < 7 else 5e-4


def test_lr_ceiling_bounds_the_rate_and_the_rule_climbs_back_from_it() -> None:
    cfg = TrainConfig(epochs=9, eval_every=9, lr=1e-3, lr_max=1e-2)
    result = train(build_model(TINY, 0), stand_in(), cfg, hook=Ceiling(), progress=False)
    rates = [row["lr"] for row in result.history]
    free = train(build_model(TINY, 0), stand_in(), cfg, progress=False).history
    # Epochs 1-3 are those of plain training (the loss falls: 1e-3, 1e-3, 1e-3 / 0.99).
    assert rates[:3] == [row["lr"] for row in free[:3]]
    assert rates[1] == pytest.approx(1e-3) and rates[2] == pytest.approx(1e-3 / 0.99)
    assert all(rate <= 1.2e-3 for rate in rates[3:6])
    assert all(rate <= 5e-4 for rate in rates[6:])
    # The rule's state is capped too: after epoch 7 (rate 5e-4) a falling loss can only
    # move the rate by one factor per epoch from the rate used, here it is held at the cap.
    assert rates[6] == pytest.approx(5e-4) and rates[8] == pytest.approx(5e-4)


def test_anneal_factor_on_a_hand_worked_schedule() -> None:
    # 10 epochs, the last 40% annealed: epochs 7-10 take 1, cos^2 steps of a half cosine
    # over 4 epochs: 0.5(1 + cos(k pi / 4)) for k = 0..3.
    factors = [anneal_factor(epoch, 10, 0.4) for epoch in range(1, 11)]
    half = math.sqrt(0.5)
    assert factors[:6] == [1.0] * 6
    assert factors[6:] == pytest.approx([1.0, 0.5 * (1 + half), 0.5, 0.5 * (1 - half)])
    assert [anneal_factor(epoch, 10, 0.0) for epoch in range(1, 11)] == [1.0] * 10
    assert anneal_factor(10, 10, 1.0) > 0.0  # the last epoch still steps


def test_anneal_scales_the_rate_used_and_leaves_the_rule_alone() -> None:
    data = stand_in()
    plain = train(build_model(TINY, 0), data, TrainConfig(epochs=6), progress=False).history
    annealed_model = build_model(TINY, 0)
    annealed = train(annealed_model, data, TrainConfig(epochs=6, anneal=0.5), progress=False)
    rates = [row["lr"] for row in annealed.history]
    # Up to epoch 3 the two runs are one; then the recorded rate is the rule's times the factor.
    assert rates[:3] == [row["lr"] for row in plain[:3]]
    assert [row["loss"] for row in annealed.history[:3]] == [row["loss"] for row in plain[:3]]
    assert rates[3] == plain[3]["lr"]  # the factor of the span's first epoch is 1
    assert rates[4] == pytest.approx(0.75 * plain[4]["lr"], rel=1e-12)  # 0.5(1 + cos(pi/3))
    # The rule moved on from its own rate (not the annealed one) on the annealed run's loss.
    losses = [row["loss"] for row in annealed.history]
    rule = adapt_lr(plain[4]["lr"], losses[4], losses[3], factor=0.99, lr_max=1e-2)
    assert rates[5] == pytest.approx(0.25 * rule, rel=1e-12)  # 0.5(1 + cos(2 pi/3))
    assert annealed.history[5]["loss"] != plain[5]["loss"]
    with pytest.raises(ValueError, match=r"TrainConfig.anneal: expected a number in \[0, 1\]"):
        TrainConfig(anneal=1.5)


def test_label_smoothing_spreads_the_target_over_the_classes() -> None:
    # The first epoch's loss is that of the initial weights: with smoothing eps the target
    # puts 1 - eps on the true class and eps / K on every class (K = 3 here).
    data, eps = stand_in(), 0.3
    log_p = torch.log_softmax(build_model(TINY, 0)(data.x_train), dim=1).detach()
    true = -log_p.gather(1, data.y_train[:, None]).mean()
    uniform = -log_p.mean()
    cfg = TrainConfig(epochs=1, eval_every=1, label_smoothing=eps)
    first = train(build_model(TINY, 0), data, cfg, progress=False).history[0]
    assert first["ce"] == pytest.approx(float((1 - eps) * true + eps * uniform), rel=1e-6)
    plain = train(build_model(TINY, 0), data, TrainConfig(epochs=1), progress=False).history[0]
    assert plain["ce"] == pytest.approx(float(true), rel=1e-6)


def test_bf16_training_repeats_itself_and_stays_near_fp32() -> None:
    """bf16 products change the losses in their last digits, not the run; the weights and
    the evaluation stay fp32, and a rerun repeats the bf16 run exactly."""
    data = stand_in()
    runs = {}
    for precision in ("fp32", "bf16", "bf16"):
        cfg = TrainConfig(epochs=5, eval_every=5, precision=precision)
        model = build_model(TINY, 0)
        result = train(model, data, cfg, progress=False)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        runs.setdefault(precision, []).append([row["loss"] for row in result.history])
    (fp32,), (bf16, again) = runs["fp32"], runs["bf16"]
    assert bf16 == again
    assert bf16 != fp32
    assert bf16 == pytest.approx(fp32, rel=2e-2)


# --- configuration, profiles, CLI ----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "TrainConfig.epochs: expected a positive integer"),
        ("lr_factor", 1.0, r"TrainConfig.lr_factor: expected a number in \(0, 1\)"),
        ("lr_max", 1e-4, r"TrainConfig.lr_max: expected a number >= lr"),
        ("device", "gpu", "TrainConfig.device: expected one of"),
        ("batch_size", 0, "TrainConfig.batch_size: expected a positive integer"),
        ("label_smoothing", 1.0, r"TrainConfig.label_smoothing: expected a number in \[0, 1\)"),
        ("precision", "fp16", "TrainConfig.precision: expected one of"),
    ],
)
def test_bad_train_config_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_config_hash_is_stable_and_sensitive() -> None:
    assert config_hash(TrainConfig()) == config_hash(TrainConfig())
    assert config_hash(TrainConfig()) != config_hash(TrainConfig(seed=1))
    assert len(config_hash(TrainConfig())) == 12


def test_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(PROFILES) == {"smoke", "book", "paper"}
    assert get_profile("paper").epochs == 2700
    assert get_profile("smoke").epochs < get_profile("book").epochs
    with pytest.raises(ValueError, match="profile: expected one of book, paper, smoke, got 'fast'"):
        get_profile("fast")
    monkeypatch.delenv("TCMP_PROFILE", raising=False)
    assert profile_from_env().name == "book"
    monkeypatch.setenv("TCMP_PROFILE", "smoke")
    assert profile_from_env().name == "smoke"
    monkeypatch.setenv("TCMP_PROFILE", "nope")
    with pytest.raises(ValueError, match="TCMP_PROFILE: profile: expected one of"):
        profile_from_env()
    config = get_profile("smoke").train_config(seed=3, lr_max=5e-3)
    assert (config.epochs, config.seed, config.lr_max) == (get_profile("smoke").epochs, 3, 5e-3)


def test_cli_train_smoke_writes_a_valid_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.json"
    code = cli_main(
        [
            "train",
            "--dataset",
            "synthetic",
            "--profile",
            "smoke",
            "--seed",
            "0",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    from tcmplib.records import read_record  # the run record that `tcmp table` reads too

    record = read_record(out)
    assert (record.config.profile, record.config.dataset) == ("smoke", "synthetic")
    assert record.config.method == "baseline" and record.report.total_weights == 1_967_616
    assert record.identity["train"]["epochs"] == get_profile("smoke").epochs
    assert [row["epoch"] for row in record.history] == [2, 4], "the evaluated epochs"
    assert 0.0 <= record.report.class_avg_accuracy <= 1.0
    assert record.provenance.torch and record.provenance.date
    assert not list(tmp_path.glob("*.tmp"))
    assert "wrote" in capsys.readouterr().out


class ExemptAll(NoOpHook):
    def decay_exempt(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.parameters())


def test_parameters_a_hook_exempts_ignore_weight_decay() -> None:
    def run(hook: NoOpHook, weight_decay: float) -> dict[str, Tensor]:
        model = build_model(TINY, seed=1)
        cfg = TrainConfig(epochs=4, seed=0, weight_decay=weight_decay)
        train(model, stand_in(), cfg, hook=hook, progress=False)
        return params(model)

    plain = run(NoOpHook(), 0.0)
    exempt = run(ExemptAll(), 10.0)
    decayed = run(NoOpHook(), 10.0)
    assert all(torch.equal(plain[k], exempt[k]) for k in plain)
    assert not torch.equal(plain["fc"], decayed["fc"])
