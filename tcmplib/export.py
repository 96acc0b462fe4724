"""A compact network as an ONNX model, and onnxruntime to run and time it next to torch.

:func:`export_onnx` traces :class:`~tcmplib.compact.CompactGCN`'s own forward pass, so the
ONNX graph computes what the compact network computes: input ``skeletons`` of shape
``(batch, nodes, d_in)`` with a dynamic batch axis, output ``logits`` of shape
``(batch, classes)``. The weights and the gathers' indices are stored as initializers,
dense (the zeros the compact tensors keep included); :mod:`tcmplib.sparse_file` is the
small file for storing a network, this one is for running it elsewhere.

The trace is taken at a small batch, on a copy that computes the convolution over the
whole batch at once (``convolution_slice = None``): a loop over slices would be unrolled
for the traced batch size only. For the same reason a per-head network's graph always
computes head after head (:meth:`~tcmplib.compact.CompactGCN.headwise`), and the graph
always gathers the dense layer's kept inputs (:meth:`~tcmplib.compact.CompactGCN.scatters`
is a speed choice taken per batch size in torch; both paths give the same logits). A live
head without Q/K pairs is exported with one zero Q/K column (the same uniform attention:
width-0 tensors become reshapes that onnxruntime rejects), and a network with no live
unit at all is refused (its logits are zeros). A dense network exports through its
compaction with nothing removed (``compact_model(model)`` of an unpruned model), which is
the same function.

On the full-size network with 1% of its weights kept at random, onnxruntime's logits
differ from torch's by at most 4e-9; on networks trained on the synthetic data (book
profile), whose logits are larger, by up to 2.4e-6: float32 rounding, as both runtimes
sum the same products in different orders.

onnx and onnxruntime are an optional dependency (the ``export`` extra), imported on use.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from tcmplib.compact import CompactGCN, LatencyStats, _positive_int, _stats
from tcmplib.model import PRUNABLE

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "export_onnx",
    "onnx_session",
    "run_onnx",
    "measure_onnx_latency",
]

INPUT_NAME = "skeletons"
OUTPUT_NAME = "logits"
#: Einsum needs opset 12; the onnxruntime of the export extra (>= 1.18) reads 17.
DEFAULT_OPSET = 17
#: The batch the trace runs at: above 1, so that no size-1 axis can be specialised away.
TRACE_BATCH = 2


def _to_onnx_bytes(compact: CompactGCN, opset: int) -> bytes:
    if compact.wv.dtype != torch.float32:
        raise ValueError(f"compact: expected float32 weights to export, got {compact.wv.dtype}")
    if not compact.kept.fc_inputs:
        # Its logits are zeros; onnxruntime rejects the zero-size reshape such a graph holds
        # (and has been seen to die of SIGFPE on it).
        raise ValueError("compact: expected a network with live units, got none to export")
    config = compact.config
    tensors = {name: getattr(compact, name).detach() for name in PRUNABLE}
    if compact.kept.qk_width == 0:
        # Live heads without Q/K pairs have width-0 Q/K tensors, whose products the exporter
        # writes as reshapes that onnxruntime rejects. One zero column gives the same
        # all-zero scores, hence the same uniform attention (see tcmplib.compact).
        tensors["wq"] = tensors["wk"] = torch.zeros(len(compact.kept.heads), config.d_in, 1)
    # A copy, so that the caller's network keeps slicing its convolution: the graph must
    # compute the whole batch at once, since a traced loop over slices would be unrolled for
    # the trace's batch size only.
    traced = CompactGCN(config, compact.kept, tensors)
    traced.convolution_slice = None
    # Per-head filters: head after head at every batch. In onnxruntime it was the faster
    # layout at batch 1 as well as at 575 (TCMP 95%, per-head: 0.39 against 0.43 ms, 97
    # against 173 ms; benchmarks/README.md), and the graph cannot switch on the batch size.
    traced.headwise_min_batch = 1
    example = torch.zeros(TRACE_BATCH, config.nodes, config.d_in)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) is deprecated since torch 2.9 but still
        # there in 2.13, and unlike the torch.export one it needs no onnxscript; its
        # DeprecationWarning says so. The tracer warns that the Python branches of the
        # forward pass (input checks, gather or scatter) are fixed at the traced shapes:
        # they are, on purpose (see the module doc).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            traced,
            (example,),
            Path(folder) / "model.onnx",
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
        return (Path(folder) / "model.onnx").read_bytes()


def export_onnx(compact: CompactGCN, path: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``compact`` as an ONNX model to ``path``, atomically, after
    ``onnx.checker.check_model`` has accepted it; return the path."""
    import onnx

    from tcmplib.train import atomic_write  # as in compact.py: train imports neither module

    opset = _positive_int(opset, "opset", 12)
    data = _to_onnx_bytes(compact, opset)
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    return atomic_write(path, lambda handle: handle.write(data))


def onnx_session(path: str | Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session of the model at ``path`` with ``threads`` intra-op threads.

    Without ``threads``, torch's intra-op thread count (which follows ``OMP_NUM_THREADS``):
    onnxruntime's own default is every physical core, whatever the environment says, so
    the two runtimes would otherwise be timed with different numbers of threads.
    """
    import onnxruntime

    threads = torch.get_num_threads() if threads is None else _positive_int(threads, "threads", 1)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # One graph branch at a time: the network is a chain, and a second pool would only
    # compete with the first for the same cores.
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _as_input(inputs: np.ndarray | Tensor) -> np.ndarray:
    array = inputs.detach().cpu().numpy() if isinstance(inputs, Tensor) else inputs
    if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.ndim != 3:
        described = (
            f"{array.dtype} of shape {array.shape}"
            if isinstance(array, np.ndarray)
            else type(array).__name__
        )
        raise ValueError(f"inputs: expected float32 of shape (batch, nodes, d_in), got {described}")
    return np.ascontiguousarray(array)


def _run(session: Any, inputs: np.ndarray) -> np.ndarray:
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0])


def run_onnx(
    path: str | Path, inputs: np.ndarray | Tensor, threads: int | None = None
) -> np.ndarray:
    """The logits of the ONNX model at ``path`` on float32 ``inputs`` (batch, nodes, d_in),
    computed by onnxruntime (threads as in :func:`onnx_session`)."""
    return _run(onnx_session(path, threads), _as_input(inputs))


def measure_onnx_latency(
    path: str | Path,
    inputs: np.ndarray | Tensor,
    *,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> LatencyStats:
    """Time onnxruntime on ``inputs`` as :func:`~tcmplib.compact.measure_latency` times
    torch: ``repeats`` timed runs after ``warmup`` untimed ones, median and quartiles.

    The session is built once, before the clock starts; ``threads`` is its intra-op
    thread count (default as in :func:`onnx_session`), reported in the result.
    """
    repeats = _positive_int(repeats, "repeats", 1)
    warmup = _positive_int(warmup, "warmup", 0)
    array = _as_input(inputs)
    used = torch.get_num_threads() if threads is None else _positive_int(threads, "threads", 1)
    session = onnx_session(path, used)
    for _ in range(warmup):
        _run(session, array)
    durations: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        _run(session, array)
        durations.append((time.perf_counter() - start) * 1000.0)
    return _stats(durations, int(array.shape[0]), used)
