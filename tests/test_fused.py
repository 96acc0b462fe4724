"""The sliced convolution -> ReLU -> dense kernel equals the network's definition."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tcmplib.fused import convolve_dense, slice_size
from tcmplib.model import AttentionGCN, GCNConfig


def _definition(attn: torch.Tensor, v: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
    return torch.relu(torch.einsum("bhnm,bmc->bnhc", attn, v)).flatten(1) @ fc


def _per_head_definition(attn: torch.Tensor, v: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
    return torch.relu(torch.einsum("bhnm,bhmc->bnhc", attn, v)).flatten(1) @ fc


def _assert_kernel_equals(
    definition: Callable[..., torch.Tensor],
    size: int | None,
    classes: int,
    per_head: bool,
    node_major: bool = False,
) -> None:
    """Values and gradients (float64) of the kernel and of ``definition`` on random inputs;
    ``node_major``: per-head values as a view of (batch, node, head, channel) memory, the
    layout the model's one-matmul value projection gives."""
    generator = torch.Generator().manual_seed(classes)
    batch, heads, nodes, channels = 10, 3, 5, 4
    attn = torch.softmax(torch.randn(batch, heads, nodes, nodes, generator=generator), -1)
    shape = (batch, heads, nodes, channels) if per_head else (batch, nodes, channels)
    v = torch.randn(*shape, generator=generator)
    if node_major:
        v = v.transpose(1, 2).contiguous().transpose(1, 2)
        assert not v.is_contiguous()
    fc = torch.randn(nodes * heads * channels, classes, generator=generator)
    grad = torch.randn(batch, classes, generator=generator)
    results = []
    for function in (definition, lambda a, b, c: convolve_dense(a, b, c, size)):
        inputs = [t.clone().double().requires_grad_() for t in (attn, v, fc)]
        out = function(*inputs)
        out.backward(grad.double())
        results.append([out.detach(), *(t.grad for t in inputs)])
    for expected, got in zip(*results, strict=True):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size", [1, 4, 7, 10, None])
@pytest.mark.parametrize("classes", [3, 16, 45])
def test_values_and_gradients_equal_the_definition(size: int | None, classes: int) -> None:
    _assert_kernel_equals(_definition, size, classes, per_head=False)


@pytest.mark.parametrize("size", [1, 4, 7, 10, None])
@pytest.mark.parametrize("classes", [3, 45])
def test_per_head_values_and_gradients_equal_the_definition(size: int | None, classes: int) -> None:
    _assert_kernel_equals(_per_head_definition, size, classes, per_head=True)


@pytest.mark.parametrize("size", [1, 4, 10])
def test_per_head_node_major_values_equal_the_definition(size: int) -> None:
    _assert_kernel_equals(_per_head_definition, size, 45, per_head=True, node_major=True)


def test_per_head_model_gradients_equal_the_definition() -> None:
    """Every weight's gradient through the kernel (values in node-major memory, dense rows
    reordered per call) equals the gradient through features(x) @ fc."""
    torch.manual_seed(0)
    config = GCNConfig(nodes=21, d_in=12, heads=2, qk_dim=3, channels=4, values="per-head")
    model = AttentionGCN(config).double()
    x = torch.randn(70, 21, 12, dtype=torch.float64)
    grads = []
    for logits in (lambda: model(x), lambda: model.features(x) @ model.fc):
        model.zero_grad()
        logits().square().sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-10, atol=1e-12)


def test_per_head_model_uses_the_kernel_and_equals_its_features_times_fc() -> None:
    torch.manual_seed(0)
    config = GCNConfig(nodes=21, d_in=12, heads=2, qk_dim=3, channels=4, values="per-head")
    model = AttentionGCN(config)
    x = torch.randn(70, 21, 12)
    logits = model(x)
    assert type(logits.grad_fn).__name__ == "_ConvolveDenseBackward"
    torch.testing.assert_close(logits, model.features(x) @ model.fc, rtol=1e-5, atol=1e-6)


def test_the_model_uses_the_kernel_and_equals_its_features_times_fc() -> None:
    torch.manual_seed(0)
    model = AttentionGCN(
        GCNConfig(nodes=21, d_in=12, heads=2, qk_dim=3, channels=4, neighbourhood=2)
    )
    x = torch.randn(70, 21, 12)  # 70: three slices of 32, the last one short
    logits = model(x)
    assert type(logits.grad_fn).__name__ == "_ConvolveDenseBackward"
    torch.testing.assert_close(logits, model.features(x) @ model.fc, rtol=1e-5, atol=1e-6)


def test_dropout_while_training_takes_the_definition() -> None:
    model = AttentionGCN(GCNConfig(nodes=21, d_in=6, heads=2, qk_dim=2, channels=3, dropout=0.5))
    x = torch.randn(40, 21, 6)
    assert type(model.train()(x).grad_fn).__name__ == "MmBackward0"
    assert type(model.eval()(x).grad_fn).__name__ == "_ConvolveDenseBackward"


def test_one_slice_or_less_takes_the_definition() -> None:
    model = AttentionGCN(GCNConfig(nodes=21, d_in=6, heads=2, qk_dim=2, channels=3)).eval()
    assert type(model(torch.randn(32, 21, 6)).grad_fn).__name__ == "MmBackward0"
    assert type(model(torch.randn(33, 21, 6)).grad_fn).__name__ == "_ConvolveDenseBackward"


def test_slices_on_cpu_whole_batch_elsewhere() -> None:
    assert slice_size(torch.device("cpu")) == 32
    assert slice_size(torch.device("meta")) is None


@pytest.mark.parametrize("per_head", [False, True])
def test_under_bf16_autocast_the_kernel_computes_in_bf16_and_returns_fp32_gradients(
    per_head: bool,
) -> None:
    """Training in bf16 (TrainConfig.precision): the products in bf16, the gradients in the
    inputs' dtype, near the fp32 definition."""
    generator = torch.Generator().manual_seed(3)
    batch, heads, nodes, channels, classes = 10, 3, 5, 4, 7
    attn = torch.softmax(torch.randn(batch, heads, nodes, nodes, generator=generator), -1)
    shape = (batch, heads, nodes, channels) if per_head else (batch, nodes, channels)
    v = torch.randn(*shape, generator=generator)
    fc = torch.randn(nodes * heads * channels, classes, generator=generator)
    grad = torch.randn(batch, classes, generator=generator)
    definition = _per_head_definition if per_head else _definition
    results = []
    for low in (False, True):
        inputs = [t.clone().requires_grad_() for t in (attn, v, fc)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            out = convolve_dense(*inputs, 4) if low else definition(*inputs)
        assert out.dtype == (torch.bfloat16 if low else torch.float32)
        out.float().backward(grad)
        results.append([out.detach().float(), *(t.grad for t in inputs)])
    errors = []
    for expected, got in zip(*results, strict=True):
        assert got.dtype == torch.float32
        error = float((got - expected).norm() / expected.norm())
        errors.append(error)
    # Outputs within 0.4% (bf16's 8-bit mantissa); the attention's and values' gradients
    # within a few percent, as ReLU's mask flips where bf16 rounds a unit's input across 0.
    assert 0.0 < min(errors) and errors[0] < 1e-2 and max(errors) < 5e-2
