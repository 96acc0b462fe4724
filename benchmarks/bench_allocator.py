"""What glibc's handling of large blocks costs a training epoch, and what the sweep's kernel
environment (:data:`tcmplib.sweep.KERNEL_ENV`) saves.

Each setting trains the dense baseline on the embedded synthetic data (FPHA's shapes) in a
fresh process, since glibc reads its malloc settings once, at start-up. Per epoch it reports
wall time, user and system CPU time and minor page faults (``getrusage``), the peak resident
memory, and a hash of the trained weights and losses: the settings move memory around, never
a number, so the hashes must agree.

Usage::

    python benchmarks/bench_allocator.py [--epochs 8] [--warmup 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time

from tcmplib.sweep import KERNEL_ENV

SETTINGS: dict[str, dict[str, str]] = {"glibc default": {}, "KERNEL_ENV": KERNEL_ENV}


def child(epochs: int, warmup: int) -> dict[str, float | str]:
    """Train in this process and measure; the parent reads the JSON line printed."""
    from tcmplib.data import load_dataset
    from tcmplib.model import GCNConfig
    from tcmplib.train import TrainConfig, build_model, train

    data = load_dataset("synthetic")
    gcn = GCNConfig(nodes=data.num_nodes, d_in=data.d_in, classes=data.num_classes)
    model = build_model(gcn, seed=0)
    train(model, data, TrainConfig(epochs=warmup, eval_every=10**6, device="cpu"), progress=False)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    result = train(
        model, data, TrainConfig(epochs=epochs, eval_every=10**6, device="cpu"), progress=False
    )
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    digest = hashlib.sha256(repr([row["loss"] for row in result.history]).encode())
    for _, tensor in sorted(model.state_dict().items()):
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return {
        "wall_s": wall / epochs,
        "user_s": (after.ru_utime - before.ru_utime) / epochs,
        "sys_s": (after.ru_stime - before.ru_stime) / epochs,
        "faults": (after.ru_minflt - before.ru_minflt) / epochs,
        "max_rss_mb": after.ru_maxrss / 1024,
        "hash": digest.hexdigest()[:16],
        "device": result.device,
    }


def measure(env: dict[str, str], epochs: int, warmup: int, threads: int) -> dict[str, float | str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "--epochs", str(epochs), "--warmup", str(warmup)],
        env={**base, "OMP_NUM_THREADS": str(threads), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8, help="measured epochs per setting")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured epochs first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 1 or args.warmup < 1 or args.threads < 1:
        parser.error("--epochs, --warmup and --threads: expected integers >= 1")
    if args.child:
        print(json.dumps(child(args.epochs, args.warmup)))
        return

    load = os.getloadavg()[0]
    rows = {
        name: measure(env, args.epochs, args.warmup, args.threads) for name, env in SETTINGS.items()
    }
    print(
        f"dense baseline, synthetic data, {args.epochs} epochs after {args.warmup} of warm-up, "
        f"{rows['glibc default']['device']}; 1-min load average {load:.1f} on "
        f"{os.cpu_count()} CPUs before timing\n"
    )
    print(
        "| malloc setting | wall / epoch (s) | user CPU (s) | system CPU (s) "
        "| minor faults / epoch | peak RSS (MB) | weights + losses hash |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['wall_s']:.3f} | {row['user_s']:.3f} | {row['sys_s']:.3f} "
            f"| {row['faults']:,.0f} | {row['max_rss_mb']:,.0f} | {row['hash']} |"
        )
    same = len({row["hash"] for row in rows.values()}) == 1
    print(f"\nsame weights and losses in every setting: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
