"""The sparse file of a compact network: exact round trip, small size, strict checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from compact_factory import random_compact
from safetensors.numpy import load
from safetensors.numpy import save as save_numpy
from safetensors.torch import save as save_torch
from safetensors.torch import save_file

from tcmplib.compact import (
    CompactFormatError,
    CompactGCN,
    KeptIndices,
    compact_model,
    max_logit_difference,
)
from tcmplib.model import PRUNABLE, AttentionGCN, GCNConfig
from tcmplib.sparse_file import (
    _encode,
    encode_sparse,
    load_sparse,
    pack_pattern,
    save_sparse,
    sparse_bytes,
)

#: Sizes whose bitmaps end in padding bits: 42 dense-layer inputs, and wv is 5 x 7 below.
SMALL = GCNConfig(nodes=3, d_in=5, heads=2, qk_dim=3, channels=7, classes=3)


def inputs(config: GCNConfig, batch: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.nodes, config.d_in, generator=generator)


def assert_same_network(loaded: CompactGCN, compact: CompactGCN) -> None:
    assert loaded.config == compact.config
    assert loaded.kept == compact.kept
    for name in PRUNABLE:
        saved = getattr(compact, name)
        assert getattr(loaded, name).dtype == torch.float32
        assert torch.equal(getattr(loaded, name), saved), name
    x = inputs(compact.config)
    assert max_logit_difference(loaded, compact, x) == 0.0
    with torch.no_grad():
        assert torch.equal(loaded(x), compact(x))


# --------------------------------------------------------------------------- the encoding


def test_bitmap_of_a_hand_worked_tensor() -> None:
    tensor = torch.tensor([[0.0, 1.5, 0.0], [2.0, 0.0, -3.0]])
    # Row-major bits 010101, most significant first, two zero padding bits: 0b01010100.
    parts = pack_pattern((tensor != 0).reshape(-1).numpy())
    assert parts["bytes"].tolist() == [0b01010100]
    assert parts["index"].tolist() == [0b10000000], "the one pattern byte is nonzero"
    empty = pack_pattern(np.zeros(20, dtype=bool))  # three pattern bytes, all zero
    assert empty["bytes"].tolist() == [] and empty["index"].tolist() == [0]
    sparse = pack_pattern(np.arange(80) == 77)  # ten bytes, the last one 0b00000100
    assert sparse["bytes"].tolist() == [0b00000100]
    assert sparse["index"].tolist() == [0b00000000, 0b01000000]


def test_file_holds_the_nonzero_values_in_row_major_order(tmp_path: Path) -> None:
    config = GCNConfig(nodes=2, d_in=2, heads=1, qk_dim=1, channels=3, classes=2)
    kept = KeptIndices(
        value_inputs=(0, 1), channels=(0, 2), heads=(0,), qk_columns=((0,),), fc_inputs=(0, 5)
    )
    tensors = {
        "wq": torch.tensor([[[0.5], [0.0]]]),
        "wk": torch.tensor([[[0.0], [-1.0]]]),
        "wv": torch.tensor([[0.0, 1.5], [2.0, -3.0]]),
        "fc": torch.tensor([[0.0, 4.0], [5.0, 0.0]]),
    }
    compact = CompactGCN(config, kept, tensors)
    path = save_sparse(compact, tmp_path / "net.tcmps")
    stored = load(path.read_bytes())
    assert stored["wv.values"].tolist() == [1.5, 2.0, -3.0]
    assert stored["wv.bytes"].tolist() == [0b01110000]
    assert stored["fc.values"].tolist() == [4.0, 5.0]
    assert stored["fc.bytes"].tolist() == [0b01100000]
    # Dense-layer inputs 0 and 5 of the 2 * 1 * 3 = 6: bits 100001, padded.
    assert stored["kept.fc_inputs.bytes"].tolist() == [0b10000100]
    assert stored["kept.fc_inputs.index"].tolist() == [0b10000000]
    assert_same_network(load_sparse(path), compact)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("keep", [0.05, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        GCNConfig(nodes=8, d_in=24, heads=8, qk_dim=4, channels=32, classes=10),
        GCNConfig(nodes=8, d_in=24, heads=8, qk_dim=4, channels=12, classes=10, values="per-head"),
    ],
)
def test_random_networks_read_back_equal(
    tmp_path: Path, config: GCNConfig, seed: int, keep: float
) -> None:
    _, compact = random_compact(config, seed, keep)
    path = save_sparse(compact, tmp_path / "net.tcmps")
    assert path.stat().st_size == sparse_bytes(compact)
    assert_same_network(load_sparse(path), compact)


def test_attention_neighbourhood_is_kept(tmp_path: Path) -> None:
    _, compact = random_compact(GCNConfig(channels=8, heads=2, neighbourhood=2), 0, 0.2)
    loaded = load_sparse(save_sparse(compact, tmp_path / "net.tcmps"))
    assert loaded.config.neighbourhood == 2
    assert_same_network(loaded, compact)


def test_zero_width_and_empty_networks_read_back(tmp_path: Path) -> None:
    # A live head without Q/K pairs (width-0 tensors), then a network with nothing alive.
    config = GCNConfig(nodes=3, d_in=4, heads=2, qk_dim=2, channels=3, classes=2)
    torch.manual_seed(0)
    model = AttentionGCN(config)
    masks = {n: torch.zeros(s, dtype=torch.bool) for n, s in config.weight_shapes().items()}
    masks["wv"][0, 0] = masks["fc"][0, 0] = True
    compact = compact_model(model, masks)
    assert compact.wq.shape == (1, 4, 0)
    assert_same_network(load_sparse(save_sparse(compact, tmp_path / "a.tcmps")), compact)
    empty = compact_model(model, {n: torch.zeros_like(m) for n, m in masks.items()})
    assert empty.num_parameters() == 0
    assert_same_network(load_sparse(save_sparse(empty, tmp_path / "b.tcmps")), empty)


def test_signed_zeros_read_back_as_zeros(tmp_path: Path) -> None:
    _, compact = random_compact(SMALL, 0, 0.5)
    with torch.no_grad():
        compact.fc[0] = -0.0
    loaded = load_sparse(save_sparse(compact, tmp_path / "net.tcmps"))
    assert torch.equal(loaded.fc, compact.fc)
    assert not torch.signbit(loaded.fc[0]).any()


def test_saving_replaces_the_file_atomically(tmp_path: Path) -> None:
    _, first = random_compact(SMALL, 0, 0.5)
    _, second = random_compact(SMALL, 1, 0.5)
    path = save_sparse(first, tmp_path / "net.tcmps")
    save_sparse(second, path)
    assert_same_network(load_sparse(path), second)
    double = CompactGCN(
        second.config, second.kept, {n: getattr(second, n).double() for n in PRUNABLE}
    )
    with pytest.raises(ValueError, match="wq: expected float32 weights"):
        save_sparse(double, path)
    assert_same_network(load_sparse(path), second)
    assert [p.name for p in tmp_path.iterdir()] == ["net.tcmps"], "no temporary file left"


# --------------------------------------------------------------------------- full size


@pytest.fixture(scope="module")
def full_99() -> tuple[AttentionGCN, CompactGCN]:
    """The paper's network (1,967,616 weights) with 1% of its weights kept at random."""
    return random_compact(GCNConfig(), 0, 0.01)


def test_full_size_99_percent_reads_back_equal(
    tmp_path: Path, full_99: tuple[AttentionGCN, CompactGCN]
) -> None:
    model, compact = full_99
    loaded = load_sparse(save_sparse(compact, tmp_path / "net.tcmps"))
    assert_same_network(loaded, compact)
    assert all(getattr(compact, name).count_nonzero() for name in PRUNABLE)
    assert len(compact.kept.fc_inputs) < model.config.fc_in, "dead units were dropped"


def test_full_size_99_percent_is_small(
    tmp_path: Path, full_99: tuple[AttentionGCN, CompactGCN]
) -> None:
    model, compact = full_99
    path = save_sparse(compact, tmp_path / "net.tcmps")
    size = path.stat().st_size
    dense = len(save_torch({name: getattr(model, name).detach() for name in PRUNABLE}))
    assert model.num_weights() == 1_967_616 and dense > 7_800_000
    nonzero = compact.num_nonzero()
    assert 10_000 < nonzero < 20_000
    assert size / nonzero < 8, f"{size / nonzero:.2f} bytes per nonzero weight"
    assert dense / size >= 40, f"only {dense / size:.1f}x smaller than the dense file"


# --------------------------------------------------------------------------- format errors


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    _, compact = random_compact(SMALL, 1, 0.5)
    assert compact.wv.shape == (5, 7), "35 bits: the wv bitmap ends in padding"
    return save_sparse(compact, tmp_path / "net.tcmps")


def rewrite(
    path: Path,
    tensors: Callable[[dict[str, np.ndarray]], None] | None = None,
    description: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Change the file's tensors or description in place and write it with a valid digest,
    so that the check under test, not the digest, is what fails."""
    data = path.read_bytes()
    stored = dict(load(data))
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    document = json.loads(header["__metadata__"]["description"])
    del document["sha256"]
    if tensors is not None:
        tensors(stored)
    if description is not None:
        description(document)
    path.write_bytes(_encode(document, stored))


def set_padding_bit(name: str, bits: int) -> Callable[[dict[str, np.ndarray]], None]:
    """Set the last padding bit of the bitmap ``name`` of ``bits`` bits, stored validly."""

    def change(stored: dict[str, np.ndarray]) -> None:
        length = (bits + 7) // 8
        present = np.unpackbits(stored[f"{name}.index"])[:length].astype(bool)
        pattern = np.zeros(length, dtype=np.uint8)
        pattern[present] = stored[f"{name}.bytes"]
        pattern[-1] |= 1
        stored[f"{name}.bytes"] = pattern[pattern != 0]
        stored[f"{name}.index"] = np.packbits(pattern != 0)

    return change


def assign(name: str, value: np.ndarray) -> Callable[[dict[str, np.ndarray]], None]:
    return lambda stored: stored.__setitem__(name, value)


def setting(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target = document
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        target[last] = value

    return change


def extra_index_byte(stored: dict[str, np.ndarray]) -> None:
    stored["fc.index"] = np.append(stored["fc.index"], np.uint8(0))


def one_byte_dropped(stored: dict[str, np.ndarray]) -> None:
    stored["fc.bytes"] = stored["fc.bytes"][:-1]


def zero_byte_stored(stored: dict[str, np.ndarray]) -> None:
    stored["fc.bytes"] = stored["fc.bytes"].copy()
    stored["fc.bytes"][0] = 0


def one_value_dropped(stored: dict[str, np.ndarray]) -> None:
    stored["wv.values"] = stored["wv.values"][:-1]


def zero_value_stored(stored: dict[str, np.ndarray]) -> None:
    stored["wv.values"] = stored["wv.values"].copy()
    stored["wv.values"][0] = 0.0


def foreign_fc_input(stored: dict[str, np.ndarray]) -> None:
    # Dense-layer input 0 is node 0, head 0, channel 0; channel 0 is dropped below.
    bits = np.zeros(SMALL.fc_in, dtype=bool)
    bits[0] = True
    stored.update({f"kept.fc_inputs.{p}": v for p, v in pack_pattern(bits).items()})


def index_padding_bit(stored: dict[str, np.ndarray]) -> None:
    # 42 inputs make 6 pattern bytes: the index byte has two padding bits.
    stored["kept.fc_inputs.index"] = stored["kept.fc_inputs.index"] | np.uint8(1)


@pytest.mark.parametrize(
    ("tensors", "description", "message"),
    [
        (None, setting("format", "other"), 'expected "format": "tcmplib-sparse-gcn", got'),
        (None, setting("format_version", 2), '"format_version": 1, got 2'),
        (lambda s: s.pop("wq.values"), None, r"missing \['wq.values'\]"),
        (assign("extra", np.zeros(1, np.uint8)), None, r"unexpected \['extra'\]"),
        (
            lambda s: s.__setitem__("wv.values", s["wv.values"].astype(np.float64)),
            None,
            "wv.values: expected a 1-D float32 tensor, got float64",
        ),
        (
            lambda s: s.__setitem__("fc.bytes", s["fc.bytes"].reshape(1, -1)),
            None,
            "fc.bytes: expected a 1-D uint8 tensor",
        ),
        (extra_index_byte, None, r"fc\.index: expected \d+ bytes for a bitmap of \d+ bits"),
        (one_byte_dropped, None, r"fc\.bytes: expected \d+ bytes \(the set bits of fc\.index\)"),
        (zero_byte_stored, None, "fc.bytes: expected nonzero bytes only"),
        (set_padding_bit("wv", 35), None, "wv: expected zero padding bits after the first 35"),
        (index_padding_bit, None, "kept.fc_inputs.index: expected zero padding bits"),
        (
            set_padding_bit("kept.fc_inputs", 42),
            None,
            "kept.fc_inputs: expected zero padding bits after the first 42 bits",
        ),
        (one_value_dropped, None, r"wv\.values: expected \d+ values \(the set bits of"),
        (zero_value_stored, None, "wv.values: expected nonzero values only"),
        (None, setting("kept.heads", [0, 99]), r"kept.heads: expected .* in \[0, 2\)"),
        (
            foreign_fc_input,
            setting("kept.channels", [1, 2, 3, 4, 5, 6]),
            "kept.fc_inputs: input 0 .* expected to belong to a kept head and a kept channel",
        ),
        (None, setting("kept.fc_inputs", [0]), "kept: expected an object without fc_inputs"),
        (None, setting("config.nodes", 0), "GCNConfig.nodes: expected a positive integer"),
        (None, setting("config.heads", None), "GCNConfig.heads: expected a positive integer"),
        (None, lambda d: d["config"].pop("classes"), "config: expected an object with the keys"),
        (None, setting("tensors.fc", [1, 1]), "tensors: expected shapes"),
    ],
)
def test_bad_file_gives_one_line_naming_it(
    saved: Path,
    tensors: Callable[[dict[str, np.ndarray]], None] | None,
    description: Callable[[dict[str, Any]], None] | None,
    message: str,
) -> None:
    rewrite(saved, tensors, description)
    with pytest.raises(CompactFormatError, match=message) as error:
        load_sparse(saved)
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"{saved}: ")


def expect_error(path: Path, message: str) -> None:
    with pytest.raises(CompactFormatError, match=message) as error:
        load_sparse(path)
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"{path}: ")


def test_missing_truncated_and_foreign_files_are_named(saved: Path, tmp_path: Path) -> None:
    expect_error(tmp_path / "absent.tcmps", "expected a tcmplib-sparse-gcn file, no such file")
    expect_error(tmp_path, "expected a readable tcmplib-sparse-gcn file")
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    expect_error(saved, "expected a safetensors file")
    saved.write_bytes(b"not a safetensors file")
    expect_error(saved, "expected a safetensors file")
    plain = tmp_path / "plain.safetensors"
    save_file({"wq": torch.zeros(2)}, str(plain))
    expect_error(plain, "expected a description in the safetensors metadata")


def test_damaged_bytes_fail_the_digest(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-1] ^= 0x01  # the last byte of some tensor: a flipped bit loads as another network
    saved.write_bytes(bytes(data))
    expect_error(saved, "expected the sha256 digest the description records")


def test_edited_description_fails_the_digest(saved: Path) -> None:
    data = saved.read_bytes()
    # Keep the header length: swap two digits of a kept index list for two others.
    edited = data.replace(b'\\"value_inputs\\":[0,1', b'\\"value_inputs\\":[0,2', 1)
    assert edited != data
    saved.write_bytes(edited)
    expect_error(saved, "expected the sha256 digest the description records")


def test_unparsable_or_unsigned_description_is_named(saved: Path) -> None:
    data = saved.read_bytes()
    stored = dict(load(data))
    saved.write_bytes(save_numpy(stored, metadata={"description": "{"}))
    expect_error(saved, "description: expected valid JSON")
    saved.write_bytes(save_numpy(stored, metadata={"description": "[1]"}))
    expect_error(saved, "description: expected a JSON object")
    unsigned = {"format": "tcmplib-sparse-gcn", "format_version": 1}
    saved.write_bytes(save_numpy(stored, metadata={"description": json.dumps(unsigned)}))
    expect_error(saved, "expected the sha256 digest the description records")


def test_encoded_size_is_the_file_size(tmp_path: Path) -> None:
    _, compact = random_compact(SMALL, 2, 0.3)
    data = encode_sparse(compact)
    assert len(data) == sparse_bytes(compact)
    assert save_sparse(compact, tmp_path / "n.tcmps").read_bytes() == data
