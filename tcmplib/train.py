"""The training recipe shared by the baseline and every pruning method (Section 5 of the paper).

The paper trains with Adam (momentum 0.9) on the whole training split at once (batch 600 =
one step per epoch) for 2,700 epochs, and adapts a global learning rate ``nu(t)`` to the loss
of Eq. 3 (the *total* loss, cross entropy plus the pruning terms)::

    nu(t) = nu(t-1) * 0.99   if the loss rose
    nu(t) = nu(t-1) / 0.99   if the loss fell

**Our bound.** With full-batch training the loss falls at nearly every epoch, so the rule as
written multiplies the learning rate by 1/0.99 almost every step: x2.7 per 100 epochs, x10^5
over 1,000 epochs, after which training blows up. The paper does not say how it avoids this.
We cap the learning rate at ``TrainConfig.lr_max`` (default 10x the initial 1e-3). Below the
cap the paper's rule acts unchanged: it lowers the rate as soon as the loss rises and lets it
climb back while the loss falls, so the rate settles at the largest value (up to the cap) at
which the loss still decreases. :func:`adapt_lr` is the rule, the cap included.

How one epoch runs, top to bottom (see :func:`train`):

1. ``hook.on_epoch_start`` (a pruning method may anneal a temperature here), and the rate is
   lowered to ``hook.lr_ceiling`` if it is above it (a pruning method whose masks switch
   within a band of weight magnitudes keeps Adam's steps narrower than that band);
2. for each batch (one batch by default): cross entropy + ``hook.extra_loss``, one Adam step;
   when the data augments (``data.draw_train``, the recipe's option), the epoch's training
   inputs are a fresh random draw;
3. a history row: total loss, cross entropy, learning rate, training accuracy, the hook's
   logs, and every ``eval_every`` epochs the test metrics;
4. the adaptive-lr rule on the epoch's total loss sets the rate of the next epoch;
5. every ``checkpoint_every`` epochs an atomic checkpoint, from which a later call resumes;
6. an observer installed with :func:`observing`, if any, sees the row and the model (a
   diagnostic reads per-epoch state through it, from any method, without changing the run).

Pruning methods plug in through :class:`TrainHook`; the masks themselves live in
``torch.nn.utils.parametrize`` parametrizations on the model's weights, so this trainer never
sees them: it optimises ``model.parameters()``, which includes the parametrizations' originals.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from tcmplib.model import AttentionGCN, GCNConfig

if TYPE_CHECKING:  # matplotlib is imported only when a curve is drawn
    from matplotlib.figure import Figure

__all__ = [
    "PRECISIONS",
    "DEVICES",
    "TrainConfig",
    "TrainData",
    "TrainHook",
    "NoOpHook",
    "TrainResult",
    "adapt_lr",
    "anneal_factor",
    "atomic_write",
    "build_model",
    "config_hash",
    "describe_device",
    "evaluate",
    "observing",
    "plot_history",
    "resolve_device",
    "train",
]

#: An observer is called after every epoch with the epoch's history row and the model.
Observer = Callable[[dict[str, float], nn.Module], None]
_OBSERVER: contextvars.ContextVar[Observer | None] = contextvars.ContextVar(
    "tcmplib_train_observer", default=None
)

#: Accepted values of ``TrainConfig.device``.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: Accepted values of ``TrainConfig.precision``: fp32 throughout, or the forward pass's
#: products in bf16 under ``torch.autocast`` (weights, optimizer and loss stay fp32).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
CHECKPOINT_FORMAT = 1


# -------------------------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run. The defaults are the paper's (Section 5)."""

    epochs: int = 2700
    lr: float = 1e-3  # initial learning rate nu(0)
    lr_factor: float = (
        0.99  # the adaptive rule: x factor when the loss rises, / factor when it falls
    )
    lr_max: float = 1e-2  # our bound on the adaptive rule (see the module doc)
    batch_size: int | None = None  # None: the whole training split in one step, as in the paper
    weight_decay: float = 0.0  # Adam's L2 term; the paper uses none
    seed: int = 0  # seeds batch order and any randomness of a hook
    device: str = "auto"  # "auto" picks CUDA when available
    eval_every: int = 50  # test metrics every this many epochs, and at the last epoch
    checkpoint_every: int | None = None  # None: no checkpoints
    # The cross-entropy's label smoothing (the paper's loss is plain cross-entropy: 0). Came
    # after runs were recorded: at its default it stays out of run identities.
    label_smoothing: float = field(default=0.0, metadata={"identity": "unless-default"})
    # The matmuls' precision while training (see PRECISIONS); evaluation is always fp32.
    precision: str = field(default="fp32", metadata={"identity": "unless-default"})
    # The share of the final epochs over which the rate used falls along a half cosine toward
    # zero (0: none, the paper); see anneal_factor. Came after runs were recorded.
    anneal: float = field(default=0.0, metadata={"identity": "unless-default"})

    def __post_init__(self) -> None:
        def positive_int(name: str, value: object) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name}: expected a positive integer, got {value!r}")

        positive_int("epochs", self.epochs)
        positive_int("eval_every", self.eval_every)
        if self.batch_size is not None:
            positive_int("batch_size", self.batch_size)
        if self.checkpoint_every is not None:
            positive_int("checkpoint_every", self.checkpoint_every)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr: expected a positive finite number, got {self.lr!r}")
        if not (isinstance(self.lr_factor, (int, float)) and 0 < self.lr_factor < 1):
            raise ValueError(
                f"TrainConfig.lr_factor: expected a number in (0, 1), got {self.lr_factor!r}"
            )
        if not (isinstance(self.lr_max, (int, float)) and self.lr_max >= self.lr):
            raise ValueError(
                f"TrainConfig.lr_max: expected a number >= lr ({self.lr}), got {self.lr_max!r}"
            )
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(
                f"TrainConfig.weight_decay: expected a number >= 0, got {self.weight_decay!r}"
            )
        if not (
            isinstance(self.label_smoothing, (int, float))
            and not isinstance(self.label_smoothing, bool)
            and 0.0 <= self.label_smoothing < 1.0
        ):
            raise ValueError(
                "TrainConfig.label_smoothing: expected a number in [0, 1), "
                f"got {self.label_smoothing!r}"
            )
        if not (
            isinstance(self.anneal, (int, float))
            and not isinstance(self.anneal, bool)
            and 0.0 <= self.anneal <= 1.0
        ):
            raise ValueError(
                f"TrainConfig.anneal: expected a number in [0, 1], got {self.anneal!r}"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed: expected an integer >= 0, got {self.seed!r}")
        if self.device not in DEVICES:
            raise ValueError(f"TrainConfig.device: expected one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"TrainConfig.precision: expected one of {PRECISIONS}, got {self.precision!r}"
            )


def config_hash(config: Any, length: int = 12) -> str:
    """A short, stable hash of a dataclass config (SHA-256 of its sorted JSON), for run folders."""
    if not is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config_hash: expected a dataclass instance, got {type(config).__name__}")
    from tcmplib.run import identity_options  # fields added later hash as before at default

    text = json.dumps(identity_options(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is an error."""
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but CUDA is not available here")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def describe_device(device: torch.device) -> str:
    """The device as results record it: the GPU's name, or the CPU's torch thread count."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def build_model(gcn: GCNConfig | None = None, seed: int = 0) -> AttentionGCN:
    """A freshly initialised GCN whose weights depend on ``seed`` only (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AttentionGCN(gcn)


# -------------------------------------------------------------------------------------------
# Extension point for pruning methods
# -------------------------------------------------------------------------------------------


class TrainHook(Protocol):
    """What a pruning method adds to training. Epochs are numbered 1..epochs.

    For a resumed run to match an uninterrupted one, a hook's state must follow from the
    epoch number and the model (its parametrizations' parameters and buffers are
    checkpointed with the model); randomness should come from torch's global RNG, which the
    trainer seeds and checkpoints.
    """

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        """Called before each epoch, e.g. to anneal a temperature."""

    def lr_ceiling(self, epoch: int, epochs: int) -> float:
        """The largest learning rate this epoch may use (``math.inf``: no bound).

        Must follow from the epoch number alone, so a resumed run matches an uninterrupted one.
        """
        ...

    def extra_loss(self, model: nn.Module) -> tuple[Tensor, dict[str, float]]:
        """A scalar added to the cross entropy at every step, and values to log for the epoch.

        The sum is the loss of Eq. 3 and is what the adaptive learning rate follows.
        """
        ...

    def on_train_end(self, model: nn.Module) -> None:
        """Called once after the last epoch, before the final evaluation (e.g. crisp masks)."""

    def decay_exempt(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters that Adam's L2 term (``TrainConfig.weight_decay``) must leave alone.

        A method whose extra loss is itself a prior on some weights (PMP) exempts them, so
        that two priors do not pull the same weights apart.
        """
        ...


class NoOpHook:
    """A hook that changes nothing: plain training. Subclass it to override only what you need."""

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        return None

    def lr_ceiling(self, epoch: int, epochs: int) -> float:
        return math.inf

    def extra_loss(self, model: nn.Module) -> tuple[Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        return torch.zeros((), device=device), {}

    def on_train_end(self, model: nn.Module) -> None:
        return None

    def decay_exempt(self, model: nn.Module) -> list[nn.Parameter]:
        return []


class TrainData(Protocol):
    """The splits the trainer reads (:class:`tcmplib.data.SkeletonDataset` has them)."""

    @property
    def x_train(self) -> Tensor | np.ndarray: ...
    @property
    def y_train(self) -> Tensor | np.ndarray: ...
    @property
    def x_test(self) -> Tensor | np.ndarray: ...
    @property
    def y_test(self) -> Tensor | np.ndarray: ...


# -------------------------------------------------------------------------------------------
# The pieces: learning-rate rule, metrics, checkpoints
# -------------------------------------------------------------------------------------------


def _parameter_groups(model: nn.Module, exempt: list[nn.Parameter]) -> list[dict[str, Any]]:
    """Adam's parameter groups: one, or a second without weight decay for ``exempt``."""
    exempt_ids = {id(p) for p in exempt}
    decayed = [p for p in model.parameters() if id(p) not in exempt_ids]
    if not exempt_ids:
        return [{"params": decayed}]
    return [{"params": decayed}, {"params": list(exempt), "weight_decay": 0.0}]


def anneal_factor(epoch: int, epochs: int, anneal: float) -> float:
    """What the rate of ``epoch`` (1-based) is multiplied by when the last ``anneal`` share of
    the ``epochs`` anneals: 1 before that span, then a half cosine from 1 toward 0, whose last
    epoch still takes a (small) step.

    Full-batch training under a fresh augmentation draw every epoch never settles: at the
    rate the adaptive rule holds, the weights wander and the accuracy with them. Annealing
    the last stretch lets the run end at a settled point rather than wherever the wander
    stops. The rule's own state is left alone: it keeps reacting to the loss, and the factor
    scales the rate it sets (the factor follows from the epoch alone, so a resumed run
    repeats an uninterrupted one).
    """
    span = round(anneal * epochs)
    start = epochs - span
    if span == 0 or epoch <= start:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - start - 1) / span))


def adapt_lr(
    lr: float, loss: float, previous_loss: float | None, *, factor: float, lr_max: float
) -> float:
    """The paper's adaptive learning rate with our cap: the rate for the next epoch.

    ``lr * factor`` if the loss rose, ``lr / factor`` (at most ``lr_max``) if it fell, ``lr``
    if it is unchanged or there is no previous loss yet (first epoch).
    """
    if previous_loss is None or loss == previous_loss:
        return lr
    if loss > previous_loss:
        return lr * factor
    return min(lr / factor, lr_max)


def _to_tensor(values: Tensor | np.ndarray, dtype: torch.dtype, name: str) -> Tensor:
    try:
        return torch.as_tensor(values, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name}: expected an array or tensor, got {type(values).__name__}"
        ) from err


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> dict[str, float]:
    """Metrics of ``model`` on ``(x, y)``; accuracies are fractions in [0, 1].

    - ``class_avg_accuracy``: the mean over classes of the per-class recall, the paper's
      "average accuracy through action classes" (classes absent from ``y`` are skipped);
    - ``accuracy``: the fraction of correctly classified samples;
    - ``loss``: the mean cross entropy.
    """
    device = next(model.parameters()).device
    x_t = _to_tensor(x, torch.float32, "evaluate x").to(device)
    y_t = _to_tensor(y, torch.int64, "evaluate y").to(device)
    if y_t.dim() != 1 or x_t.shape[0] != y_t.shape[0]:
        raise ValueError(
            f"evaluate: expected x of N samples and y of shape (N,), "
            f"got x {tuple(x_t.shape)} and y {tuple(y_t.shape)}"
        )
    was_training = model.training
    model.eval()
    try:
        logits = model(x_t)
    finally:
        model.train(was_training)
    pred = logits.argmax(dim=1)
    correct = (pred == y_t).to(torch.float64)
    num_classes = max(int(y_t.max()) + 1, logits.shape[1])
    per_class_total = torch.bincount(y_t, minlength=num_classes).to(torch.float64)
    per_class_correct = torch.bincount(y_t, weights=correct, minlength=num_classes)
    present = per_class_total > 0
    recall = per_class_correct[present] / per_class_total[present]
    return {
        "accuracy": float(correct.mean()),
        "class_avg_accuracy": float(recall.mean()),
        "loss": float(F.cross_entropy(logits, y_t)),
    }


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Write a file through ``write(handle)`` so that readers see the old file or the new one.

    The bytes go to a temporary file in the same folder, are flushed to disk, then renamed
    over ``path`` (a rename within one file system is atomic). An interrupted run leaves at
    most a stray ``.tmp`` file, never a truncated result or checkpoint.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def _checkpoint_path(checkpoint_dir: Path, epoch: int) -> Path:
    return checkpoint_dir / f"ckpt-{epoch:06d}.pt"


def _latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    found = sorted(checkpoint_dir.glob("ckpt-[0-9][0-9][0-9][0-9][0-9][0-9].pt"))
    return found[-1] if found else None


@dataclass
class _State:
    """Everything that changes from epoch to epoch besides model and optimizer."""

    epoch: int  # epochs completed
    lr: float  # rate of the next epoch
    previous_loss: float | None
    history: list[dict[str, float]]
    elapsed_s: float  # training time spent in earlier calls of a resumed run (0 for a fresh one)


def _save_checkpoint(
    checkpoint_dir: Path,
    state: _State,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_rng: torch.Generator,
    run_hash: str,
    elapsed_s: float,
) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config_hash": run_hash,
        "epoch": state.epoch,
        "lr": state.lr,
        "previous_loss": state.previous_loss,
        "history": state.history,
        "elapsed_s": elapsed_s,
        "model": model.state_dict(),  # parametrization originals and buffers included
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_batches": batch_rng.get_state(),
    }
    path = _checkpoint_path(checkpoint_dir, state.epoch)
    atomic_write(path, lambda handle: torch.save(payload, handle))
    # Keep only the newest checkpoint: the full model and Adam state weigh ~24 MB each.
    for old in checkpoint_dir.glob("ckpt-*.pt"):
        if old != path:
            old.unlink()


def _load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_rng: torch.Generator,
    run_hash: str,
) -> _State:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("config_hash") != run_hash:
        raise ValueError(
            f"checkpoint_dir: {path} belongs to another run (config hash "
            f"{payload.get('config_hash')!r}, expected {run_hash!r}); use a fresh folder"
        )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng_cpu"])
    if payload["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["rng_cuda"])
    batch_rng.set_state(payload["rng_batches"])
    return _State(
        epoch=int(payload["epoch"]),
        lr=float(payload["lr"]),
        previous_loss=payload["previous_loss"],
        history=list(payload["history"]),
        elapsed_s=float(payload["elapsed_s"]),
    )


# -------------------------------------------------------------------------------------------
# The result and the loop
# -------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a run produced. Accuracies are fractions in [0, 1]."""

    config: TrainConfig
    history: list[dict[str, float]]  # one row per epoch, see :func:`train`
    test: dict[str, float]  # final test metrics (after ``hook.on_train_end``)
    train: dict[str, float]  # final training-split metrics, same model
    wall_time_s: float  # training time of the whole run, summed over resumed calls
    device: str
    resumed_from_epoch: int | None = None
    config_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.config_hash = config_hash(self.config)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (plain dicts, lists, numbers and strings)."""
        return {
            "config": asdict(self.config),
            "config_hash": self.config_hash,
            "test": dict(self.test),
            "train": dict(self.train),
            "wall_time_s": self.wall_time_s,
            "device": self.device,
            "resumed_from_epoch": self.resumed_from_epoch,
            "history": [dict(row) for row in self.history],
        }


@contextlib.contextmanager
def observing(observer: Observer) -> Iterator[None]:
    """Within the block, every :func:`train` call hands each epoch's row and model to ``observer``.

    For diagnostics of runs whose trainer sits inside a pruning method: the observer sees the
    row after the epoch's step (and its checkpoint) and must not change the model. To end a
    run early it raises an exception of its own, which propagates out of :func:`train`.
    """
    if not callable(observer):
        raise TypeError(f"observing: observer: expected a callable, got {type(observer).__name__}")
    token = _OBSERVER.set(observer)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


def _batches(n: int, batch_size: int | None, rng: torch.Generator) -> Iterator[Tensor | slice]:
    """Indices of each step of one epoch: the whole split, or a seeded shuffle cut in batches."""
    if batch_size is None or batch_size >= n:
        yield slice(None)
        return
    order = torch.randperm(n, generator=rng)
    yield from order.split(batch_size)


def train(
    model: nn.Module,
    data: TrainData,
    config: TrainConfig,
    *,
    hook: TrainHook | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` and return its history and final metrics.

    The model is moved to the configured device and stays there. With ``checkpoint_dir``,
    a checkpoint is written every ``config.checkpoint_every`` epochs and the run resumes from
    the newest checkpoint found there (on CPU the result is bit-identical to an
    uninterrupted run). Each history row holds ``epoch`` (1-based), ``loss`` (total),
    ``ce``, ``lr`` (the rate used in that epoch), ``train_accuracy`` (measured on the
    training batches during the epoch, before each step), the hook's logs, and every
    ``eval_every`` epochs ``test_accuracy``, ``test_class_avg_accuracy`` and ``test_loss``.
    """
    hook = hook if hook is not None else NoOpHook()
    observer = _OBSERVER.get()
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None and config.checkpoint_every is None:
        raise ValueError("checkpoint_dir: given, but config.checkpoint_every is None")
    ckpt_every = config.checkpoint_every
    device = resolve_device(config.device)
    model.to(device)
    x_train = _to_tensor(data.x_train, torch.float32, "data.x_train").to(device)
    y_train = _to_tensor(data.y_train, torch.int64, "data.y_train").to(device)
    x_test = _to_tensor(data.x_test, torch.float32, "data.x_test").to(device)
    y_test = _to_tensor(data.y_test, torch.int64, "data.y_test").to(device)
    n = x_train.shape[0]
    run_hash = config_hash(config)
    draw_train = getattr(data, "draw_train", None)
    low_precision = config.precision == "bf16"

    optimizer = torch.optim.Adam(
        _parameter_groups(model, hook.decay_exempt(model)),
        lr=config.lr,
        betas=(0.9, 0.999),
        weight_decay=config.weight_decay,
    )
    batch_rng = torch.Generator().manual_seed(config.seed)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []

    # fork_rng: seeding for this run must not disturb the caller's global RNG state.
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(config.seed)
        state = _State(epoch=0, lr=config.lr, previous_loss=None, history=[], elapsed_s=0.0)
        latest = _latest_checkpoint(ckpt_dir) if ckpt_dir is not None else None
        if latest is not None:
            state = _load_checkpoint(latest, model, optimizer, batch_rng, run_hash)
        resumed_from = state.epoch if latest is not None else None
        started = time.perf_counter()

        bar = tqdm(
            range(state.epoch + 1, config.epochs + 1),
            initial=state.epoch,
            total=config.epochs,
            desc="train",
            disable=not progress,
        )
        for epoch in bar:
            hook.on_epoch_start(model, epoch, config.epochs)
            # The ceiling also bounds the adaptive rule's state, so the rule climbs back from
            # the rate actually used.
            state.lr = min(state.lr, hook.lr_ceiling(epoch, config.epochs))
            rate = state.lr * anneal_factor(epoch, config.epochs, config.anneal)
            for group in optimizer.param_groups:
                group["lr"] = rate
            model.train()

            # One epoch: one full-batch step by default (the paper), or seeded minibatches.
            total_loss = total_ce = total_correct = 0.0
            logs: dict[str, float] = {}
            x_epoch = draw_train(device) if draw_train is not None else x_train
            for idx in _batches(n, config.batch_size, batch_rng):
                xb, yb = x_epoch[idx], y_train[idx]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=low_precision):
                    logits = model(xb)
                logits = logits.float()
                ce = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                extra, step_logs = hook.extra_loss(model)
                loss = ce + extra
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                weight = yb.shape[0] / n  # epoch values are sample-weighted means over steps
                total_loss += loss.item() * weight
                total_ce += ce.item() * weight
                total_correct += float((logits.argmax(dim=1) == yb).sum())
                for key, value in step_logs.items():
                    logs[key] = logs.get(key, 0.0) + float(value) * weight

            if not math.isfinite(total_loss):
                raise FloatingPointError(
                    f"training diverged: the loss is {total_loss} at epoch {epoch} "
                    f"(lr {rate:.3g}); lower TrainConfig.lr or lr_max"
                )
            row: dict[str, float] = {
                "epoch": epoch,
                "loss": total_loss,
                "ce": total_ce,
                "lr": rate,
                "train_accuracy": total_correct / n,
                **logs,
            }
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                metrics = evaluate(model, x_test, y_test)
                row.update({f"test_{key}": value for key, value in metrics.items()})
            state.history.append(row)

            # The paper's rule on the total loss (Eq. 3), with our cap; sets the next epoch's rate.
            state.lr = adapt_lr(
                state.lr,
                total_loss,
                state.previous_loss,
                factor=config.lr_factor,
                lr_max=config.lr_max,
            )
            state.previous_loss = total_loss
            state.epoch = epoch
            bar.set_postfix(loss=f"{total_loss:.4f}", acc=f"{row['train_accuracy']:.3f}")

            if ckpt_dir is not None and ckpt_every is not None and epoch % ckpt_every == 0:
                elapsed = state.elapsed_s + time.perf_counter() - started
                _save_checkpoint(ckpt_dir, state, model, optimizer, batch_rng, run_hash, elapsed)
            if observer is not None:
                observer(dict(row), model)
        bar.close()

        hook.on_train_end(model)
        test_metrics = evaluate(model, x_test, y_test)
        train_metrics = evaluate(model, x_train, y_train)
        wall = state.elapsed_s + time.perf_counter() - started

    return TrainResult(
        config=config,
        history=state.history,
        test=test_metrics,
        train=train_metrics,
        wall_time_s=wall,
        device=describe_device(device),
        resumed_from_epoch=resumed_from,
    )


def plot_history(history: list[dict[str, float]], title: str = "") -> Figure:
    """Learning curves of a run: losses and learning rate (left), accuracies in % (right)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise ValueError("plot_history: expected at least one history row, got none")
    epochs = [row["epoch"] for row in history]
    evaluated = [row for row in history if "test_class_avg_accuracy" in row]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")

    ax_loss.plot(epochs, [row["loss"] for row in history], label="training loss")
    if any(row["loss"] != row["ce"] for row in history):
        ax_loss.plot(epochs, [row["ce"] for row in history], label="cross entropy", ls="--")
    ax_loss.plot(
        [row["epoch"] for row in evaluated],
        [row["test_loss"] for row in evaluated],
        label="test cross entropy",
        marker=".",
    )
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_lr = ax_loss.twinx()
    ax_lr.plot(epochs, [row["lr"] for row in history], color="grey", lw=1, label="learning rate")
    ax_lr.set_yscale("log")  # the adaptive rule is multiplicative
    ax_lr.set_ylabel("learning rate", color="grey")
    handles = ax_loss.get_legend_handles_labels()
    lr_handles = ax_lr.get_legend_handles_labels()
    ax_loss.legend(handles[0] + lr_handles[0], handles[1] + lr_handles[1], fontsize="small")

    ax_acc.plot(epochs, [100 * row["train_accuracy"] for row in history], label="training")
    ax_acc.plot(
        [row["epoch"] for row in evaluated],
        [100 * row["test_class_avg_accuracy"] for row in evaluated],
        label="test, class-averaged",
        marker=".",
    )
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(0, 100)
    ax_acc.legend(fontsize="small")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig
