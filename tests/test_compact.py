"""Compaction: the compact model computes the masked model's logits, and survives a file trip."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import parametrize

from tcmplib.compact import (
    CompactFormatError,
    CompactGCN,
    KeptIndices,
    compact_model,
    load_compact,
    load_structure,
    masked_copy,
    save_compact,
    save_structure,
    structure_of,
    summarize_compaction,
)
from tcmplib.model import PRUNABLE, AttentionGCN, GCNConfig
from tcmplib.topology import analyze, magnitude_masks

TOY = GCNConfig(nodes=3, d_in=4, heads=2, qk_dim=2, channels=3, classes=2)
MID = GCNConfig(nodes=8, d_in=24, heads=8, qk_dim=4, channels=32, classes=10)
PER_HEAD_TOY = GCNConfig(
    nodes=3, d_in=4, heads=3, qk_dim=2, channels=2, classes=2, values="per-head"
)
PER_HEAD_MID = GCNConfig(
    nodes=8, d_in=24, heads=8, qk_dim=4, channels=12, classes=10, values="per-head"
)


def model_with_seed(config: GCNConfig, seed: int, unit_scale: bool = False) -> AttentionGCN:
    """Glorot weights, or standard-normal weights (one scale for every tensor)."""
    torch.manual_seed(seed)
    model = AttentionGCN(config)
    if unit_scale:
        with torch.no_grad():
            for weight in model.prunable().values():
                weight.normal_()
    return model


def inputs(config: GCNConfig, seed: int = 0, batch: int = 5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.nodes, config.d_in, generator=generator)


def assert_same_logits(masked: AttentionGCN, x: torch.Tensor) -> None:
    compact = compact_model(masked)
    with torch.no_grad():
        ours, theirs = compact(x), masked(x)
    # float32 sums in another order: an error relative to the logits' scale (unit-scale
    # weights give logits in the hundreds, whose last bits differ between CPU kernels).
    scale = max(1.0, float(theirs.abs().max()))
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6 * scale)
    # Every stored nonzero of the compact model is an effective weight, and vice versa.
    assert (
        compact.num_nonzero()
        == analyze(
            {n: getattr(masked, n).detach() for n in PRUNABLE}, masked.config
        ).total_effective
    )


def fc_row(config: GCNConfig, node: int, head: int, channel: int) -> int:
    return (node * config.heads + head) * config.channels + channel


def toy_masks() -> dict[str, torch.Tensor]:
    """As in test_topology: head 1 dead, channel 0 the only live one, Q column 1 unpaired."""
    masks = {n: torch.zeros(s, dtype=torch.bool) for n, s in TOY.weight_shapes().items()}
    masks["wv"][0, 0] = masks["wv"][3, 0] = masks["wv"][1, 1] = True
    masks["fc"][fc_row(TOY, 0, 0, 0), 0] = True
    masks["fc"][fc_row(TOY, 2, 0, 0), 1] = True
    masks["fc"][fc_row(TOY, 1, 1, 2), 1] = True
    masks["wq"][0, 0, 0] = masks["wq"][0, 2, 1] = masks["wk"][0, 1, 0] = True
    masks["wq"][1, 0, 0] = masks["wk"][1, 0, 0] = True
    return masks


def test_toy_compaction_keeps_what_the_topology_says() -> None:
    masked = masked_copy(model_with_seed(TOY, 0), toy_masks())
    compact = compact_model(masked)
    assert compact.kept.channels == (0,)
    assert compact.kept.heads == (0,)
    assert compact.kept.qk_columns == ((0,),)
    assert compact.kept.value_inputs == (0, 3)
    assert compact.kept.fc_inputs == (fc_row(TOY, 0, 0, 0), fc_row(TOY, 2, 0, 0))
    assert {n: tuple(getattr(compact, n).shape) for n in PRUNABLE} == {
        "wq": (1, 4, 1),
        "wk": (1, 4, 1),
        "wv": (2, 1),
        "fc": (2, 2),
    }
    assert_same_logits(masked, inputs(TOY))


def test_live_head_without_query_key_keeps_uniform_attention() -> None:
    masks = toy_masks()
    masks["wq"][0] = masks["wk"][0] = False
    masked = masked_copy(model_with_seed(TOY, 0), masks)
    compact = compact_model(masked)
    assert compact.kept.heads == (0,)
    assert compact.wq.shape == (1, TOY.d_in, 0)
    assert_same_logits(masked, inputs(TOY))


def test_everything_dead_gives_zero_logits() -> None:
    masks = {n: torch.zeros(s, dtype=torch.bool) for n, s in TOY.weight_shapes().items()}
    masks["wq"][:] = True
    masked = masked_copy(model_with_seed(TOY, 0), masks)
    compact = compact_model(masked)
    assert compact.num_parameters() == 0
    assert torch.equal(compact(inputs(TOY)), torch.zeros(5, TOY.classes))
    assert_same_logits(masked, inputs(TOY))


@given(
    st.integers(0, 2**31 - 1),
    st.sampled_from([0.15, 0.3, 0.6, 0.9]),
    st.sampled_from(
        [
            TOY,
            GCNConfig(nodes=2, d_in=3, heads=3, qk_dim=3, channels=2, classes=3),
            PER_HEAD_TOY,
        ]
    ),
)
@settings(max_examples=40, deadline=None)
def test_random_masks_compact_to_the_same_logits(
    seed: int, density: float, config: GCNConfig
) -> None:
    generator = torch.Generator().manual_seed(seed)
    masks = {
        name: torch.rand(shape, generator=generator) < density
        for name, shape in config.weight_shapes().items()
    }
    masked = masked_copy(model_with_seed(config, seed % 1000), masks)
    assert_same_logits(masked, inputs(config, seed))


@pytest.mark.parametrize("rate", [0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("unit_scale", [False, True])
def test_magnitude_masks_compact_to_the_same_logits(rate: float, unit_scale: bool) -> None:
    model = model_with_seed(MID, 3, unit_scale)
    masked = masked_copy(model, magnitude_masks(model, rate))
    assert_same_logits(masked, inputs(MID, batch=16))


@pytest.mark.parametrize("rate", [0.5, 0.95, 0.99])
def test_per_head_filters_compact_to_the_same_logits_and_survive_files(
    rate: float, tmp_path: Path
) -> None:
    model = model_with_seed(PER_HEAD_MID, 6, unit_scale=True)
    masked = masked_copy(model, magnitude_masks(model, rate))
    x = inputs(PER_HEAD_MID, batch=40)  # more than one convolution slice
    assert_same_logits(masked, x)
    compact = compact_model(masked)
    # Kept channels index the (d_in x heads*channels) view: head h's channel c is h * 12 + c.
    assert max(compact.kept.channels) < PER_HEAD_MID.heads * PER_HEAD_MID.channels
    save_compact(compact, tmp_path / "model")
    with torch.no_grad():
        assert torch.equal(load_compact(tmp_path / "model")(x), compact(x))
    saved = json.loads((tmp_path / "model" / "compact.json").read_text())
    assert saved["config"]["values"] == "per-head"
    structure = structure_of(compact)
    path = save_structure(structure, tmp_path / "structure.json")
    assert load_structure(path) == structure
    with torch.no_grad():
        assert structure.twin()(x).shape == (40, PER_HEAD_MID.classes)


@pytest.mark.parametrize("values", ["shared", "per-head"])
@pytest.mark.parametrize("rate", [0.5, 0.95, 0.99])
def test_bilinear_attention_compacts_to_the_same_logits_and_survives_files(
    rate: float, values: str, tmp_path: Path
) -> None:
    base = MID if values == "shared" else PER_HEAD_MID
    config = replace(base, attention="bilinear", neighbourhood=None)
    model = model_with_seed(config, 7, unit_scale=True)
    with torch.no_grad():
        model.wq[0] = 0.0  # head 0 silenced: its filters and dense-layer rows do nothing
    masked = masked_copy(model, magnitude_masks(model, rate))
    x = inputs(config, batch=40)
    assert_same_logits(masked, x)
    compact = compact_model(masked)
    assert 0 not in compact.kept.heads
    save_compact(compact, tmp_path / "model")
    assert json.loads((tmp_path / "model" / "compact.json").read_text())["config"][
        "attention"
    ] == "bilinear"
    with torch.no_grad():
        assert torch.equal(load_compact(tmp_path / "model")(x), compact(x))


def test_unit_scale_99_percent_actually_removes_units() -> None:
    model = model_with_seed(MID, 0, unit_scale=True)
    masked = masked_copy(model, magnitude_masks(model, 0.99))
    compact = compact_model(masked)
    assert 0 < len(compact.kept.channels) < MID.channels
    assert 0 < compact.num_parameters() < model.num_weights()


def test_parametrized_model_is_compacted_through_its_parametrization() -> None:
    model = model_with_seed(MID, 4)
    masks = magnitude_masks(model, 0.9)

    class Mask(torch.nn.Module):
        def __init__(self, mask: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("mask", mask.float())

        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight * self.mask

    for name in PRUNABLE:
        parametrize.register_parametrization(model, name, Mask(masks[name]))
    x = inputs(MID)
    with torch.no_grad():
        assert torch.allclose(compact_model(model)(x), model(x), atol=1e-5)
        # Explicit masks on an unmasked model give the same compact model.
        plain = model_with_seed(MID, 4)
        assert torch.allclose(compact_model(plain, masks)(x), model(x), atol=1e-5)


# --------------------------------------------------------------------------- files


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, AttentionGCN]:
    model = model_with_seed(MID, 5, unit_scale=True)
    masked = masked_copy(model, magnitude_masks(model, 0.98))
    save_compact(compact_model(masked), tmp_path)
    return tmp_path, masked


def test_round_trip_gives_the_same_logits(saved: tuple[Path, AttentionGCN]) -> None:
    directory, masked = saved
    loaded = load_compact(directory)
    x = inputs(MID, batch=8)
    with torch.no_grad():
        assert torch.allclose(loaded(x), masked(x), atol=1e-5)
        assert torch.equal(loaded(x), compact_model(masked)(x))
    assert sorted(p.name for p in directory.iterdir()) == ["compact.json", "compact.safetensors"]


def test_summary_reports_smaller_files_and_equal_logits(saved: tuple[Path, AttentionGCN]) -> None:
    directory, masked = saved
    summary = summarize_compaction(masked, load_compact(directory), inputs(MID))
    assert summary.max_abs_difference < 1e-5
    assert summary.parameters_after < summary.parameters_before
    assert summary.bytes_after < summary.bytes_before
    on_disk = sum(p.stat().st_size for p in directory.iterdir())
    assert summary.bytes_after == on_disk
    assert summary.nonzero_after == summary.nonzero_before - (
        analyze({n: getattr(masked, n) for n in PRUNABLE}).total_kept
        - analyze({n: getattr(masked, n) for n in PRUNABLE}).total_effective
    )


def edit_json(path: Path, change: dict[str, object]) -> None:
    """Set dotted keys of a JSON file (``kept.heads``: ``document["kept"]["heads"]``)."""
    description = json.loads(path.read_text())
    for dotted, value in change.items():
        target = description
        *parents, last = dotted.split(".")
        for key in parents:
            target = target[key]
        target[last] = value
    path.write_text(json.dumps(description))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 99}, '"format_version": 1, got 99'),
        ({"format": "other"}, 'expected "format": "tcmplib-compact-gcn"'),
        ({"kept.channels": [3, 1]}, "kept.channels: expected strictly increasing"),
        ({"kept.heads": [0, 99]}, r"kept.heads: expected strictly increasing indices in \[0, 8\)"),
        ({"kept.qk_columns": []}, "kept.qk_columns: expected one list per kept head"),
        ({"config.nodes": 0}, "GCNConfig.nodes: expected a positive integer"),
        ({"tensors.fc": [1, 1]}, "tensors: expected shapes"),
    ],
)
def test_bad_description_gives_one_clear_line(
    saved: tuple[Path, AttentionGCN], change: dict[str, object], message: str
) -> None:
    directory, _ = saved
    edit_json(directory / "compact.json", change)
    with pytest.raises(CompactFormatError, match=message) as error:
        load_compact(directory)
    text = str(error.value)
    assert "\n" not in text and str(directory / "compact.json") in text


def test_corrupted_json_names_the_file(saved: tuple[Path, AttentionGCN]) -> None:
    directory, _ = saved
    path = directory / "compact.json"
    path.write_text(path.read_text()[:50])
    with pytest.raises(CompactFormatError, match=r"compact\.json: expected valid JSON"):
        load_compact(directory)


def test_missing_or_damaged_tensor_file_is_named(saved: tuple[Path, AttentionGCN]) -> None:
    directory, _ = saved
    tensors = directory / "compact.safetensors"
    tensors.write_bytes(b"not a safetensors file")
    with pytest.raises(CompactFormatError, match=r"compact\.safetensors: expected a safetensors"):
        load_compact(directory)
    tensors.unlink()
    with pytest.raises(CompactFormatError, match="no such file"):
        load_compact(directory)


def test_saving_again_replaces_the_pair_and_leaves_nothing_else(
    saved: tuple[Path, AttentionGCN],
) -> None:
    directory, masked = saved
    (directory / "notes.txt").write_text("kept")
    smaller = masked_copy(masked, magnitude_masks(masked, 0.99))
    save_compact(compact_model(smaller), directory)
    assert sorted(p.name for p in directory.iterdir()) == [
        "compact.json",
        "compact.safetensors",
        "notes.txt",
    ], "no staging folder is left, and other files are not touched"
    x = inputs(MID, batch=4)
    with torch.no_grad():
        assert torch.equal(load_compact(directory)(x), compact_model(smaller)(x))


def test_nothing_pruned_takes_the_gather_free_path_and_agrees() -> None:
    model = model_with_seed(MID, 7)
    full = {name: torch.ones_like(w, dtype=torch.bool) for name, w in model.prunable().items()}
    compact = compact_model(model, full)
    assert compact._all_inputs and compact._all_fc_rows
    partial = compact_model(model, magnitude_masks(model_with_seed(MID, 7, unit_scale=True), 0.99))
    assert not (partial._all_inputs and partial._all_fc_rows)
    x = inputs(MID, batch=6)
    with torch.no_grad():
        assert torch.allclose(compact(x), model(x), atol=1e-5)


def test_large_batches_scatter_the_dense_layer_and_agree() -> None:
    from tcmplib.compact import SCATTER_MIN_BATCH, SCATTER_MIN_SHARE

    model = model_with_seed(MID, 3)
    compact = compact_model(model, magnitude_masks(model, 0.5))
    share = len(compact.kept.fc_inputs) / compact._grid
    assert SCATTER_MIN_SHARE <= share < 1.0, "keeps enough dense-layer inputs to scatter"
    assert compact.scatters(SCATTER_MIN_BATCH) and not compact.scatters(SCATTER_MIN_BATCH - 1)
    x = inputs(MID, batch=SCATTER_MIN_BATCH)
    with torch.no_grad():
        scattered = compact(x)  # every output times the zero-filled weights
        gathered = torch.cat([compact(x[i : i + 1]) for i in range(len(x))])
        features = compact.convolution(compact.attention(x), compact.values(x))
        assert features.shape[1] == compact._grid, "nothing gathered"
        assert compact.convolution(compact.attention(x[:1]), compact.values(x[:1])).shape[1] == len(
            compact.kept.fc_inputs
        ), "gathered at batch 1"
        assert torch.allclose(scattered, gathered, atol=1e-5)
        assert torch.allclose(
            scattered, masked_copy(model, magnitude_masks(model, 0.5))(x), atol=1e-5
        )
    sparse = compact_model(model, magnitude_masks(model_with_seed(MID, 3, unit_scale=True), 0.99))
    assert len(sparse.kept.fc_inputs) / sparse._grid < SCATTER_MIN_SHARE
    assert not sparse.scatters(10_000), "few kept outputs: always gathered"


def test_the_convolution_reads_only_the_attention_rows_it_needs() -> None:
    # Hand-made: 2 heads, 3 nodes; kept inputs (node 0, head 1, c0) and (node 2, head 1, c1)
    # need rows 0 and 2 of head 1 only, stored in (node, head) order.
    config = GCNConfig(nodes=3, d_in=2, heads=2, qk_dim=1, channels=2, classes=1)
    kept = KeptIndices(
        value_inputs=(0, 1), channels=(0, 1), heads=(0, 1), qk_columns=((0,), (0,)),
        fc_inputs=(0 * 4 + 1 * 2 + 0, 2 * 4 + 1 * 2 + 1),
    )  # fmt: skip
    conv_rows, fc_rows = CompactGCN._feature_indices(config, kept)
    assert conv_rows.tolist() == [1 * 3 + 0, 1 * 3 + 2]
    assert fc_rows.tolist() == [0 * 2 + 0, 1 * 2 + 1]


@pytest.mark.parametrize("batch", [1, 31, 32, 33, 70])
def test_sliced_convolution_agrees_with_the_masked_network_at_every_batch(batch: int) -> None:
    model = model_with_seed(MID, 5)
    masks = magnitude_masks(model_with_seed(MID, 5, unit_scale=True), 0.95)
    compact = compact_model(model, masks)
    x = inputs(MID, batch=batch)
    with torch.no_grad():
        assert torch.allclose(compact(x), masked_copy(model, masks)(x), atol=1e-5)


# --------------------------------------------------------------------------- structures


def test_index_runs_on_a_hand_worked_list() -> None:
    from tcmplib.compact import _from_runs, _runs

    assert _runs((0, 1, 2, 5, 7, 8)) == [[0, 3], 5, 7, 8]
    assert _runs(()) == []
    assert _from_runs([[0, 3], 5, [7, 9]], "x", Path("f")) == [0, 1, 2, 5, 7, 8]


def test_structure_round_trip_and_twin(saved: tuple[Path, AttentionGCN], tmp_path: Path) -> None:
    directory, masked = saved
    compact = load_compact(directory)
    structure = structure_of(compact)
    # The recorded sizes are those of the saved network, measured independently.
    assert structure.file_bytes == (directory / "compact.safetensors").stat().st_size
    assert structure.nonzero_weights == compact.num_nonzero() < compact.num_parameters()
    assert structure.stored_values == compact.num_parameters()
    path = save_structure(structure, tmp_path / "networks" / "run.json")
    assert load_structure(path) == structure
    assert not list(path.parent.glob("*.tmp"))
    twin = structure.twin(seed=3)
    assert {n: tuple(p.shape) for n, p in twin.named_parameters()} == {
        n: tuple(p.shape) for n, p in compact.named_parameters()
    }
    assert torch.equal(twin.fc_rows, compact.fc_rows)
    assert torch.equal(twin.value_inputs, compact.value_inputs)
    assert not torch.equal(twin.fc, compact.fc), "a twin carries none of the weights"
    assert twin(inputs(MID)).shape == (5, MID.classes)
    assert torch.equal(structure.twin(seed=3).fc, twin.fc), "twins are seeded"


def test_structure_holds_no_weight(saved: tuple[Path, AttentionGCN], tmp_path: Path) -> None:
    directory, _ = saved
    compact = load_compact(directory)
    path = save_structure(structure_of(compact), tmp_path / "s.json")
    text = path.read_text()
    assert "." not in text.replace("tcmplib-compact-structure", ""), "no float anywhere"
    runs = json.loads(text)["kept_runs"]
    plain = {axis: list(getattr(compact.kept, axis)) for axis in runs}
    assert len(json.dumps(runs, separators=(",", ":"))) < len(
        json.dumps(plain, separators=(",", ":"))
    ), "runs cost less than the plain lists (all 8 heads are one run here)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, 'expected "format": "tcmplib-compact-structure"'),
        (
            {"kept_runs.channels": [[3, 1]]},
            r"kept_runs.channels: expected a list of indices and \[start",
        ),
        ({"kept_runs.heads": [[0, 99]]}, r"kept.heads: expected strictly increasing indices"),
        ({"tensors.fc": [1, 1]}, "tensors: expected shapes"),
        ({"nonzero_weights": -1}, "nonzero_weights: expected an integer >= 0"),
        ({"nonzero_weights": 10**9}, "nonzero_weights: expected at most"),
        ({"stored_values": 7}, "stored_values: expected"),
        ({"file_bytes": "big"}, "file_bytes: expected an integer"),
    ],
)
def test_bad_structure_gives_one_clear_line(
    saved: tuple[Path, AttentionGCN], tmp_path: Path, change: dict[str, object], message: str
) -> None:
    directory, _ = saved
    path = save_structure(structure_of(load_compact(directory)), tmp_path / "s.json")
    edit_json(path, change)
    with pytest.raises(CompactFormatError, match=message) as error:
        load_structure(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_multiply_adds_of_the_papers_network_and_of_a_hand_made_compact_one() -> None:
    from tcmplib.compact import multiply_adds

    dense = multiply_adds(GCNConfig())
    assert dense == {
        "attention": 21 * 84 * 2 * 16 * 8 + 16 * 21 * 21 * 8,
        "values": 21 * 84 * 128,
        "convolution": 16 * 21 * 21 * 128,
        "dense": 21 * 16 * 128 * 45,
    }
    assert sum(dense.values()) == 3_572_352  # the 3.57 M of the dense forward pass
    # 2 heads of 3 nodes, one Q/K column each; inputs (0, h1, c0) and (2, h1, c1) read 2 rows.
    config = GCNConfig(nodes=3, d_in=2, heads=2, qk_dim=1, channels=2, classes=1)
    kept = KeptIndices(
        value_inputs=(1,), channels=(0, 1), heads=(0, 1), qk_columns=((0,), (0,)),
        fc_inputs=(0 * 4 + 1 * 2 + 0, 2 * 4 + 1 * 2 + 1),
    )  # fmt: skip
    assert multiply_adds(config, kept) == {
        "attention": 3 * 2 * 2 * 2 * 1 + 2 * 3 * 3 * 1,
        "values": 3 * 1 * 2,
        "convolution": 2 * 3 * 2,
        "dense": 2 * 1,
    }


def test_structure_records_the_sparse_file_size(tmp_path: Path) -> None:
    from tcmplib.sparse_file import save_sparse

    model = model_with_seed(MID, 9)
    compact = compact_model(model, magnitude_masks(model_with_seed(MID, 9, unit_scale=True), 0.9))
    structure = structure_of(compact)
    assert structure.sparse_bytes == save_sparse(compact, tmp_path / "n.tcmps").stat().st_size
    path = save_structure(structure, tmp_path / "s.json")
    assert load_structure(path).sparse_bytes == structure.sparse_bytes
    document = json.loads(path.read_text())
    del document["sparse_bytes"]  # as recorded before the sparse format existed
    path.write_text(json.dumps(document))
    assert load_structure(path).sparse_bytes is None
    document["sparse_bytes"] = -1
    path.write_text(json.dumps(document))
    with pytest.raises(CompactFormatError, match=r"s\.json: sparse_bytes"):
        load_structure(path)


def test_cached_query_key_weights_follow_changes_to_the_weights() -> None:
    model = model_with_seed(MID, 2)
    compact = compact_model(model)
    x = inputs(MID, batch=3)
    with torch.no_grad():
        first = compact(x)
        compact.wq.mul_(2.0)  # in place: the cache must notice
        assert not torch.allclose(compact(x), first)
        compact.wq.div_(2.0)
        assert torch.allclose(compact(x), first, atol=1e-6)
    with torch.enable_grad():  # with autograd, gradients reach the weights
        compact(x).sum().backward()
    assert compact.wq.grad is not None and compact.wq.grad.abs().sum() > 0


def test_per_head_convolution_on_a_hand_worked_network() -> None:
    from tcmplib.compact import _head_ranges, multiply_adds

    # 3 heads of 2 channels, 3 nodes. Head 0 keeps channels 0 and 1 (columns 0, 1), head 2
    # keeps channel 1 (column 5); head 1 is dead. Kept inputs: (n0, h0, c1), (n2, h0, c0),
    # (n1, h2, c1).
    config = GCNConfig(nodes=3, d_in=2, heads=3, qk_dim=1, channels=2, classes=1,
                       values="per-head")  # fmt: skip
    kept = KeptIndices(
        value_inputs=(0, 1), channels=(0, 1, 5), heads=(0, 2), qk_columns=((0,), (0,)),
        fc_inputs=(0 * 6 + 0 * 2 + 1, 2 * 6 + 0 * 2 + 0, 1 * 6 + 2 * 2 + 1),
    )  # fmt: skip
    fc_rows, ranges = _head_ranges(config, kept)
    assert ranges == ((0, 2), (2, 3))  # head 0: kept channels 0-1; head 2: kept channel 2
    # Outputs head after head, (node, channel) within: head 0's 3 x 2, then head 2's 3 x 1.
    assert fc_rows.tolist() == [0 * 2 + 1, 2 * 2 + 0, 6 + 1 * 1 + 0]
    # Every row of a kept head against its own channels: 3 rows x 3 sources x 3 channels.
    assert multiply_adds(config, kept)["convolution"] == 3 * 3 * 3
    torch.manual_seed(0)
    tensors = {"wq": torch.randn(2, 2, 1), "wk": torch.randn(2, 2, 1),
               "wv": torch.randn(2, 3), "fc": torch.randn(3, 1)}  # fmt: skip
    compact = CompactGCN(config, kept, tensors)
    x = inputs(config, batch=4)
    with torch.no_grad():
        attention, values = compact.attention(x), x @ tensors["wv"]
        features = compact.convolution(attention, compact.values(x))
    # Input k is ReLU(attention row n of compact head i . kept channel p), by definition.
    for k, (i, n, p) in enumerate([(0, 0, 1), (0, 2, 0), (1, 1, 2)]):
        expected = torch.relu((attention[:, i, n, :] * values[:, :, p]).sum(dim=1))
        assert torch.allclose(features[:, k], expected, atol=1e-6)


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.99])
@pytest.mark.parametrize("batch", [1, 33, 300])
def test_per_head_networks_agree_on_every_path(rate: float, batch: int) -> None:
    # Rate 0: every head keeps all its channels, so at batch 33 and 300 the dense network's
    # sliced kernel computes; 0.99: heads keep different numbers of channels, computed head
    # after head, and few dense-layer inputs, gathered at every batch.
    model = model_with_seed(PER_HEAD_MID, 11)
    masks = magnitude_masks(model_with_seed(PER_HEAD_MID, 11, unit_scale=True), rate)
    compact = compact_model(model, masks)
    if rate == 0.0:
        assert compact._dense_kernel
    if rate == 0.99:
        assert not compact._dense_kernel and not compact.scatters(batch)
    x = inputs(PER_HEAD_MID, seed=1, batch=batch)
    with torch.no_grad():
        assert torch.allclose(compact(x), masked_copy(model, masks)(x), atol=1e-5)


@pytest.mark.parametrize("config", [MID, PER_HEAD_MID])
@pytest.mark.parametrize("batch", [1, 40])
def test_attention_without_query_key_pairs_is_computed_once(config: GCNConfig, batch: int) -> None:
    model = model_with_seed(config, 4)
    masks = magnitude_masks(model_with_seed(config, 4, unit_scale=True), 0.9)
    masks["wq"][:] = masks["wk"][:] = False  # every score 0: one attention for all sequences
    compact = compact_model(model, masks)
    x = inputs(config, seed=2, batch=batch)
    with torch.no_grad():
        attention = compact.attention(x)
        assert compact.constant_attention is not None
        assert attention.data_ptr() == compact.constant_attention.data_ptr(), "not copied"
        assert torch.allclose(attention, masked_copy(model, masks).attention(x))
        assert torch.allclose(compact(x), masked_copy(model, masks)(x), atol=1e-5)
