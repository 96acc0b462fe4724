"""The measurements behind the training step's kernel choices, one table each.

1. The network's tail (convolution -> ReLU -> dense layer, forward + backward) as defined
   (:meth:`tcmplib.model.AttentionGCN.features` then ``@ fc``) and sliced by
   :func:`tcmplib.fused.convolve_dense` at several slice sizes.
2. One slice's dense-layer matmuls with FPHA's 45 classes against 48 columns.
3. A matmul whose operand holds denormal floats (what relaxed masks leave in the stop band)
   against the same matmul with those entries 0.
4. Sorting 2M weight magnitudes (PMP, every step) as floats and as their int32 bit patterns.

Usage::

    python benchmarks/bench_kernels.py [--threads 1,2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from tcmplib.fused import convolve_dense

BATCH, HEADS, NODES, CHANNELS, CLASSES = 600, 16, 21, 128, 45
FEATURES = NODES * HEADS * CHANNELS


def median_ms(work: Callable[[], object], repeats: int = 15, warmup: int = 3) -> float:
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def tail_rows() -> list[tuple[str, float]]:
    generator = torch.Generator().manual_seed(0)
    attn = torch.softmax(torch.randn(BATCH, HEADS, NODES, NODES, generator=generator), -1)
    v = torch.randn(BATCH, NODES, CHANNELS, generator=generator)
    fc = 0.01 * torch.randn(FEATURES, CLASSES, generator=generator)
    grad = torch.randn(BATCH, CLASSES, generator=generator)
    leaves = [t.requires_grad_() for t in (attn, v, fc)]

    def step(forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            for leaf in leaves:
                leaf.grad = None
            forward().backward(grad)

        return run

    def definition() -> torch.Tensor:
        return torch.relu(torch.einsum("bhnm,bmc->bnhc", attn, v)).flatten(1) @ fc

    rows = [("as defined (einsum, ReLU, matmul)", median_ms(step(definition)))]
    for size in (8, 16, 32, 64, 150, BATCH):
        rows.append(
            (f"sliced, {size} graphs per slice",
             median_ms(step(lambda size=size: convolve_dense(attn, v, fc, size))))
        )  # fmt: skip
    return rows


def width_rows() -> list[tuple[str, float]]:
    hidden = torch.randn(32, FEATURES)
    return [row for width in (CLASSES, 48) for row in _dense_slice(hidden, width)]


def _dense_slice(hidden: torch.Tensor, width: int) -> list[tuple[str, float]]:
    fc, grad = torch.randn(FEATURES, width), torch.randn(hidden.shape[0], width)
    fc_t, acc = fc.t().contiguous(), torch.zeros(FEATURES, width)
    return [
        (f"{width} columns: logits = hidden @ fc", median_ms(lambda: hidden @ fc)),
        (f"{width} columns: grad fc += hidden^T @ g",
         median_ms(lambda: acc.addmm_(hidden.t(), grad))),
        (f"{width} columns: grad hidden = g @ fc^T", median_ms(lambda: grad @ fc_t)),
    ]  # fmt: skip


def denormal_rows() -> list[tuple[str, float]]:
    hidden = torch.rand(32, FEATURES)
    normal = torch.randn(FEATURES, 48)
    denormal = normal.clone()
    denormal[::2] = 1e-40  # below float32's smallest normal number, 1.2e-38
    zeroed = normal.clone()
    zeroed[::2] = 0.0
    return [
        ("half the weights 1e-40 (denormal)", median_ms(lambda: hidden @ denormal)),
        ("the same weights 0", median_ms(lambda: hidden @ zeroed)),
    ]


def sort_rows() -> list[tuple[str, float]]:
    magnitudes = 0.05 * torch.randn(1_972_224, generator=torch.Generator().manual_seed(0)).abs()
    bits = magnitudes.view(torch.int32)
    return [
        ("torch.sort of the float32 magnitudes", median_ms(lambda: torch.sort(magnitudes), 5)),
        ("torch.sort of their int32 bit patterns, stable",
         median_ms(lambda: torch.sort(bits, stable=True), 5)),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = parser.parse_args()
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads: expected comma-separated integers, got {args.threads!r}")
    print(f"torch {torch.__version__}, 1-min load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs before timing; median milliseconds\n")  # fmt: skip
    tables = [
        (f"1. the tail, forward + backward, {BATCH} graphs", tail_rows),
        ("2. one slice (32 graphs) of the dense layer", width_rows),
        ("3. logits of 32 graphs, 48 columns", denormal_rows),
        ("4. 1,972,224 magnitudes", sort_rows),
    ]
    for title, rows_of in tables:
        columns = {count: (torch.set_num_threads(count), rows_of())[1] for count in threads}
        print(f"{title}\n\n| | " + " | ".join(f"{c} thread(s)" for c in threads) + " |")
        print("|---|" + "---|" * len(threads))
        for index, (label, _) in enumerate(columns[threads[0]]):
            cells = " | ".join(f"{columns[c][index][1]:.2f}" for c in threads)
            print(f"| {label} | {cells} |")
        print()


if __name__ == "__main__":
    main()
