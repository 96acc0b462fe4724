"""FPHA reader: a made-up mini data set in the official layout, every documented failure,
and (when ``FPHA_ROOT`` is set) the counts of the real annotations."""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tcmplib.data import FPHAFormatError, load_dataset, load_fpha
from tcmplib.data.fpha import ANNOTATION_DIRNAME, SPLIT_FILENAME, parse_skeleton, resolve_fpha_root

# (subject, action, repetition, label, is_train, frames) of the mini data set.
MINI = [
    (1, "open_box", 1, 0, False, 5),
    (1, "open_box", 2, 0, True, 9),
    (2, "open_box", 2, 0, True, 3),
    (1, "wave_hand", 1, 1, False, 12),
    (1, "wave_hand", 2, 1, True, 7),
    (2, "wave_hand", 1, 1, False, 4),
    (2, "pour_water", 1, 2, False, 6),
    (2, "pour_water", 2, 2, True, 30),
]


def skeleton_text(frames: int, seed: int, newline: str = "\n") -> str:
    """Made-up frames in FPHA's text format: zero-padded index then 63 six-decimal floats."""
    values = np.random.default_rng(seed).uniform(-150.0, 600.0, size=(frames, 63))
    lines = [f"{t:04d} " + " ".join(f"{v:.6f}" for v in row) for t, row in enumerate(values)]
    return newline.join(lines) + newline


def split_text(rows: list[tuple[int, str, int, int, bool, int]]) -> str:
    train = [f"Subject_{s}/{a}/{r} {label}" for s, a, r, label, is_train, _ in rows if is_train]
    test = [f"Subject_{s}/{a}/{r} {label}" for s, a, r, label, is_train, _ in rows if not is_train]
    return "\n".join([f"Training {len(train)}", *train, f"Test {len(test)}", *test]) + "\n"


def skeleton_path(root: Path, subject: int, action: str, rep: int) -> Path:
    return root / ANNOTATION_DIRNAME / f"Subject_{subject}" / action / str(rep) / "skeleton.txt"


def write_mini(root: Path, rows: list[tuple[int, str, int, int, bool, int]] = MINI) -> Path:
    """Write the mini data set (plus one empty file outside the split, as FPHA has) to root."""
    for k, (subject, action, rep, _, _, frames) in enumerate(rows):
        path = skeleton_path(root, subject, action, rep)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(skeleton_text(frames, seed=k))
    empty = skeleton_path(root, 2, "pour_water", 3)
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    (root / SPLIT_FILENAME).write_text(split_text(rows))
    return root


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    return write_mini(tmp_path / "fpha")


def check_mini(raw_counts: dict[str, int | float], meta: dict[str, object]) -> None:
    frames = [row[5] for row in MINI]
    assert raw_counts["sequences"] == len(MINI)
    assert raw_counts["frames"] == sum(frames)
    assert raw_counts["classes"] == 3
    assert raw_counts["train_sequences"] == 4
    assert raw_counts["train_frames"] == sum(row[5] for row in MINI if row[4])
    assert meta["skipped_empty"] == ["Subject_2/pour_water/3"]


def test_folder_is_read_in_split_order_with_exact_values(mini: Path) -> None:
    raw = load_fpha(mini)
    check_mini(raw.counts(), raw.meta)
    assert raw.ids[0] == "Subject_1/open_box/2"  # train block first, as in the split file
    assert raw.class_names == ("open_box", "wave_hand", "pour_water")
    assert raw.labels.tolist() == [0, 0, 1, 2, 0, 1, 1, 2]
    assert raw.subjects.tolist() == [1, 2, 1, 2, 1, 1, 2, 2]
    expected = np.loadtxt(skeleton_path(mini, 1, "open_box", 2))[:, 1:].reshape(-1, 21, 3)
    np.testing.assert_array_equal(raw.sequences[0], expected)


@pytest.mark.parametrize("mode", ["w:xz", "w:gz"])
def test_archive_is_streamed_without_unpacking(mini: Path, tmp_path: Path, mode: str) -> None:
    archive = tmp_path / f"{ANNOTATION_DIRNAME}.tar.{mode[2:]}"
    with tarfile.open(archive, mode) as tar:
        tar.add(mini / ANNOTATION_DIRNAME, arcname=ANNOTATION_DIRNAME)
    holder = tmp_path / "packed"
    holder.mkdir()
    archive = archive.rename(holder / archive.name)
    (holder / SPLIT_FILENAME).write_bytes((mini / SPLIT_FILENAME).read_bytes())
    from_folder = load_fpha(mini)
    for root in (holder, archive):  # the folder holding the archive, or the archive itself
        raw = load_fpha(root)
        check_mini(raw.counts(), raw.meta)
        assert raw.ids == from_folder.ids
        for a, b in zip(raw.sequences, from_folder.sequences, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["w:xz", "w:gz"])
def test_truncated_archive_is_one_line_naming_it(mini: Path, tmp_path: Path, mode: str) -> None:
    holder = tmp_path / "packed"
    holder.mkdir()
    archive = holder / f"{ANNOTATION_DIRNAME}.tar.{mode[2:]}"
    with tarfile.open(archive, mode) as tar:
        tar.add(mini / ANNOTATION_DIRNAME, arcname=ANNOTATION_DIRNAME)
    (holder / SPLIT_FILENAME).write_bytes((mini / SPLIT_FILENAME).read_bytes())
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # a cut download
    with pytest.raises(FPHAFormatError) as caught:
        load_fpha(holder)
    message = str(caught.value)
    assert message.startswith(f"{archive}: not a complete .tar.xz/.tar.gz archive")
    assert "\n" not in message


def test_root_may_be_the_annotation_folder_and_fpha_root_is_read(
    mini: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_fpha(mini / ANNOTATION_DIRNAME).counts()["sequences"] == len(MINI)
    monkeypatch.setenv("FPHA_ROOT", str(mini))
    assert load_fpha().counts()["sequences"] == len(MINI)


def test_missing_root_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FPHA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="FPHA_ROOT"):
        resolve_fpha_root(None)


def test_crlf_line_endings_are_accepted(mini: Path) -> None:
    path = skeleton_path(mini, 1, "wave_hand", 2)
    path.write_bytes(skeleton_text(7, seed=99, newline="\r\n").encode())
    raw = load_fpha(mini)
    lf = parse_skeleton(skeleton_text(7, seed=99).encode(), "lf")
    np.testing.assert_array_equal(raw.sequences[raw.ids.index("Subject_1/wave_hand/2")], lf)


def replace_line(path: Path, number: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n")


def edit_field(path: Path, number: int, column: int, value: str) -> None:
    fields = path.read_text().splitlines()[number - 1].split()
    fields[column - 1] = value
    replace_line(path, number, " ".join(fields))


def expect_error(root: Path, *fragments: str) -> None:
    with pytest.raises(FPHAFormatError, match=".*".join(re.escape(f) for f in fragments)):
        load_fpha(root)


def test_short_line(mini: Path) -> None:
    path = skeleton_path(mini, 1, "open_box", 2)
    replace_line(path, 4, " ".join(path.read_text().splitlines()[3].split()[:-1]))
    expect_error(mini, str(path), "line 4", "expected 64", "got 63")


def test_letters_in_a_field(mini: Path) -> None:
    path = skeleton_path(mini, 1, "open_box", 2)
    edit_field(path, 3, 17, "12.5abc")
    expect_error(mini, str(path), "line 3", "field 17", "'12.5abc'", "expected a number")


def test_nan_coordinate(mini: Path) -> None:
    path = skeleton_path(mini, 2, "pour_water", 2)
    edit_field(path, 21, 5, "nan")
    expect_error(mini, str(path), "line 21", "field 5", "expected a finite number")


def test_gap_in_frame_indices(mini: Path) -> None:
    path = skeleton_path(mini, 1, "wave_hand", 1)
    edit_field(path, 6, 1, "0006")
    expect_error(mini, str(path), "line 6", "'0006'", "expected 5")


def test_blank_line_inside_a_file(mini: Path) -> None:
    path = skeleton_path(mini, 1, "wave_hand", 1)
    replace_line(path, 2, "")
    expect_error(mini, str(path), "line 2", "got 0")


def test_empty_file_listed_in_the_split(mini: Path) -> None:
    path = skeleton_path(mini, 2, "open_box", 2)
    path.write_bytes(b"")
    expect_error(mini, str(path), "line 1", "empty", "line 3")


def test_split_entry_without_file(mini: Path) -> None:
    skeleton_path(mini, 1, "wave_hand", 2).unlink()
    expect_error(mini, SPLIT_FILENAME, "line 4", "Subject_1/wave_hand/2")


def test_label_out_of_range(mini: Path) -> None:
    rows = [row if row[1] != "pour_water" else (*row[:3], 7, *row[4:]) for row in MINI]
    (mini / SPLIT_FILENAME).write_text(split_text(rows))
    expect_error(mini, SPLIT_FILENAME, "line 5", "label 7 is unknown", "0...2")


def test_label_inconsistent_with_action(mini: Path) -> None:
    rows = list(MINI)
    rows[5] = (2, "wave_hand", 1, 0, False, 4)  # wave_hand is 1 elsewhere
    (mini / SPLIT_FILENAME).write_text(split_text(rows))
    expect_error(mini, SPLIT_FILENAME, "line 9", "'wave_hand' has label 0", "expected 1")


def test_one_label_for_two_actions(mini: Path) -> None:
    rows = [row if row[1] != "pour_water" else (*row[:3], 1, *row[4:]) for row in MINI]
    (mini / SPLIT_FILENAME).write_text(split_text(rows))
    expect_error(mini, SPLIT_FILENAME, "line 5", "label 1 given to 'pour_water'")


def test_split_header_and_count(mini: Path) -> None:
    text = (mini / SPLIT_FILENAME).read_text()
    (mini / SPLIT_FILENAME).write_text(text.replace("Test 4", "Test 5"))
    expect_error(mini, SPLIT_FILENAME, "line 11", "file ends inside the Test block")
    (mini / SPLIT_FILENAME).write_text(text.replace("Training 4", "Train 4"))
    expect_error(mini, SPLIT_FILENAME, "line 1", "expected 'Training <count>'")


def test_duplicate_split_entry(mini: Path) -> None:
    rows = [*MINI[:-1], MINI[0]]
    (mini / SPLIT_FILENAME).write_text(split_text(rows))
    expect_error(mini, SPLIT_FILENAME, "already listed on line")


@pytest.mark.fpha
def test_real_fpha_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.environ.get("FPHA_ROOT"):
        pytest.skip("FPHA_ROOT is not set: point it at your FPHA copy to run this test")
    raw = load_fpha()
    expected = {
        "sequences": 1175,
        "frames": 105459,
        "classes": 45,
        "subjects": 6,
        "train_sequences": 600,
        "test_sequences": 575,
        "train_frames": 52324,
        "test_frames": 53135,
    }
    counts = raw.counts()
    assert {key: counts[key] for key in expected} == expected
    assert raw.lengths.min() == 7 and raw.lengths.max() == 1151
    assert sorted(raw.meta["skipped_empty"]) == [
        "Subject_2/close_milk/4",
        "Subject_2/put_tea_bag/2",
        "Subject_4/flip_sponge/2",
    ]
    assert raw.class_names[0] == "open_juice_bottle" and raw.class_names[44] == "high_five"

    monkeypatch.setenv("TCMP_CACHE", str(tmp_path / "cache"))
    first = load_dataset("fpha")
    second = load_dataset("fpha")
    assert (first.meta["cache"]["hit"], second.meta["cache"]["hit"]) == (False, True)
    assert (first.num_classes, first.num_nodes, first.d_in) == (45, 21, 84)
    assert first.x_train.shape == (600, 21, 84) and first.x_test.shape == (575, 21, 84)
    assert bool((first.x_train == second.x_train).all())
