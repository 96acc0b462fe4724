"""Reader for the First-Person Hand Action benchmark (FPHA) hand-pose annotations.

FPHA may not be redistributed, so nothing here ships data: the reader takes the official
layout from wherever the user keeps it, either unpacked::

    <root>/Hand_pose_annotation_v1/Subject_N/<action>/<seq>/skeleton.txt
    <root>/data_split_action_recognition.txt

or packed as ``Hand_pose_annotation_v1.tar.xz`` / ``.tar.gz``, which is streamed member by
member without unpacking. Each ``skeleton.txt`` line is ``t x1 y1 z1 ... x21 y21 z21``
(64 fields, millimetres); the split file is a ``Training <n>`` block then a ``Test <m>`` block
of ``Subject_N/<action>/<seq> <label>`` lines.

Every file is validated while it is parsed, because a silently misread line would only show
up much later as a slightly worse accuracy. Any violation raises one
:class:`FPHAFormatError` naming the file, the line and what was expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from tcmplib.data.skeleton import NUM_JOINTS, SkeletonSequences

__all__ = [
    "FPHAFormatError",
    "FPHASource",
    "SplitEntry",
    "ANNOTATION_DIRNAME",
    "SPLIT_FILENAME",
    "resolve_fpha_root",
    "parse_skeleton",
    "parse_split",
    "fpha_fingerprint",
    "load_fpha",
]

ANNOTATION_DIRNAME = "Hand_pose_annotation_v1"
SPLIT_FILENAME = "data_split_action_recognition.txt"
ARCHIVE_SUFFIXES = (".tar.xz", ".txz", ".tar.gz", ".tgz")
FIELDS_PER_LINE = 1 + 3 * NUM_JOINTS  # frame index + xyz of 21 joints = 64
FPHA_ROOT_ENV = "FPHA_ROOT"

# A skeleton file anywhere in a tree or archive: ".../Subject_N/<action>/<seq>/skeleton.txt".
_SKELETON_PATH = re.compile(r"(?:^|/)(Subject_(\d+)/([^/]+)/([^/]+))/skeleton\.txt$")
_SPLIT_ENTRY = re.compile(r"Subject_(\d+)/([^/\s]+)/([^/\s]+)")


class FPHAFormatError(ValueError):
    """The FPHA files do not have the documented format; the message names file and line."""


@dataclass(frozen=True)
class FPHASource:
    """Where the annotations and the split file are, once ``root`` has been interpreted."""

    #: A folder holding ``Subject_N/`` folders, or a .tar.xz/.tar.gz archive.
    annotations: Path
    #: The split file; None when it is to be found inside the archive.
    split_file: Path | None

    @property
    def is_archive(self) -> bool:
        return self.annotations.is_file()


@dataclass(frozen=True)
class SplitEntry:
    """One line of the split file."""

    sequence_id: str  # "Subject_N/<action>/<seq>"
    subject: int
    action: str
    label: int
    is_train: bool
    line: int  # 1-based line number in the split file


def _is_archive(path: Path) -> bool:
    return path.name.endswith(ARCHIVE_SUFFIXES)


def resolve_fpha_root(root: str | Path | None = None) -> FPHASource:
    """Interpret ``root`` (or ``$FPHA_ROOT``): a data folder, the annotation folder, or an archive.

    Accepted, in this order of preference for a folder: ``<root>/Hand_pose_annotation_v1/``;
    ``<root>`` being that folder (it holds ``Subject_N/``); an archive
    ``<root>/Hand_pose_annotation_v1.tar.xz`` (or ``.tar.gz``). The split file is looked for
    in ``<root>``, next to the annotation folder or archive, then inside the archive.
    """
    if root is None:
        env = os.environ.get(FPHA_ROOT_ENV)
        if not env:
            raise FileNotFoundError(
                f"FPHA data location unknown: pass root=... or set the {FPHA_ROOT_ENV} environment "
                f"variable to the folder holding {ANNOTATION_DIRNAME}/ (or "
                f"{ANNOTATION_DIRNAME}.tar.xz) and {SPLIT_FILENAME}"
            )
        root = env
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"FPHA root {root}: no such file or folder")

    if root.is_file():
        if not _is_archive(root):
            raise FileNotFoundError(
                f"FPHA root {root}: expected a folder or a {'/'.join(ARCHIVE_SUFFIXES)} archive"
            )
        return FPHASource(root, _find_split(root.parent))

    unpacked = root / ANNOTATION_DIRNAME
    if unpacked.is_dir():
        return FPHASource(unpacked, _find_split(root, unpacked))
    if root.name == ANNOTATION_DIRNAME or any(root.glob("Subject_*/*/*/skeleton.txt")):
        return FPHASource(root, _find_split(root, root.parent))
    archives = sorted(p for p in root.iterdir() if p.is_file() and _is_archive(p))
    preferred = [p for p in archives if p.name.startswith(ANNOTATION_DIRNAME)]
    if preferred or len(archives) == 1:
        archive = (preferred or archives)[0]
        return FPHASource(archive, _find_split(root))
    raise FileNotFoundError(
        f"FPHA root {root}: expected {ANNOTATION_DIRNAME}/ or {ANNOTATION_DIRNAME}.tar.xz "
        f"(or .tar.gz) in it, or Subject_N/<action>/<seq>/skeleton.txt folders"
    )


def _find_split(*folders: Path) -> Path | None:
    for folder in folders:
        candidate = folder / SPLIT_FILENAME
        if candidate.is_file():
            return candidate
    return None


def parse_skeleton(data: bytes, where: str) -> np.ndarray:
    """Parse one ``skeleton.txt``: (T, 21, 3) float64 millimetres; (0, 21, 3) for an empty file.

    The whole file goes through numpy's C parser at once (fast); only when that fails or a
    check trips is the file walked line by line to name the first offending line.
    Trailing blank lines are tolerated; LF and CRLF line endings both work.
    """
    lines = data.rstrip().splitlines()
    if not lines:
        return np.zeros((0, NUM_JOINTS, 3))
    try:
        table = np.loadtxt(io.BytesIO(data), dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        _raise_first_malformed_line(lines, where)
    if table.shape != (len(lines), FIELDS_PER_LINE):
        _raise_first_malformed_line(lines, where)

    not_finite = ~np.isfinite(table)
    if not_finite.any():
        row, col = np.argwhere(not_finite)[0]
        raise FPHAFormatError(
            f"{where}, line {row + 1}: field {col + 1} is {lines[row].split()[col].decode()!r}, "
            f"expected a finite number"
        )
    frame_index = table[:, 0]
    wrong = np.flatnonzero(frame_index != np.arange(len(lines)))
    if wrong.size:
        row = int(wrong[0])
        raise FPHAFormatError(
            f"{where}, line {row + 1}: frame index is {lines[row].split()[0].decode()!r}, "
            f"expected {row} (indices must run 0..N-1 without gaps)"
        )
    return table[:, 1:].reshape(len(lines), NUM_JOINTS, 3)


def _raise_first_malformed_line(lines: list[bytes], where: str) -> NoReturn:
    """Walk the lines (slow path) and raise for the first one that is not 64 numbers."""
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != FIELDS_PER_LINE:
            raise FPHAFormatError(
                f"{where}, line {number}: expected {FIELDS_PER_LINE} whitespace-separated fields "
                f"(frame index + xyz of {NUM_JOINTS} joints), got {len(fields)}"
            )
        for column, field in enumerate(fields, start=1):
            try:
                float(field)
            except ValueError:
                raise FPHAFormatError(
                    f"{where}, line {number}: field {column} is "
                    f"{field.decode(errors='replace')!r}, expected a number"
                ) from None
    raise FPHAFormatError(f"{where}: could not be parsed as {FIELDS_PER_LINE} numbers per line")


def parse_split(data: bytes, where: str) -> list[SplitEntry]:
    """Parse and check the split file: both blocks, counts, duplicates, labels vs action names.

    Labels must number the actions 0..K-1, one label per action name and one action name per
    label (FPHA: K = 45), so that a class index means the same action in train and test.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as err:
        raise FPHAFormatError(
            f"{where}: byte {err.start} is not ASCII, expected a text file"
        ) from None
    lines = text.rstrip().splitlines()
    entries: list[SplitEntry] = []
    seen: dict[str, int] = {}
    number = 0
    for block, is_train in (("Training", True), ("Test", False)):
        number += 1
        header = lines[number - 1].split() if number <= len(lines) else []
        if len(header) != 2 or header[0] != block or not header[1].isdigit():
            got = lines[number - 1] if number <= len(lines) else "end of file"
            raise FPHAFormatError(
                f"{where}, line {number}: expected '{block} <count>', got {got!r}"
            )
        for _ in range(int(header[1])):
            number += 1
            if number > len(lines):
                raise FPHAFormatError(
                    f"{where}, line {number}: file ends inside the {block} block, "
                    f"expected {header[1]} entries after '{block} {header[1]}'"
                )
            entry = _parse_split_line(lines[number - 1], number, is_train, where)
            if entry.sequence_id in seen:
                raise FPHAFormatError(
                    f"{where}, line {number}: {entry.sequence_id} already listed on line "
                    f"{seen[entry.sequence_id]}, expected each sequence once"
                )
            seen[entry.sequence_id] = number
            entries.append(entry)
    if number < len(lines):
        raise FPHAFormatError(
            f"{where}, line {number + 1}: expected end of file after the Test block, "
            f"got {lines[number]!r}"
        )
    _check_labels(entries, where)
    return entries


def _parse_split_line(line: str, number: int, is_train: bool, where: str) -> SplitEntry:
    fields = line.split()
    match = _SPLIT_ENTRY.fullmatch(fields[0]) if len(fields) == 2 else None
    if match is None or not fields[1].isdigit():
        raise FPHAFormatError(
            f"{where}, line {number}: expected 'Subject_N/<action>/<seq> <label>' with a "
            f"non-negative integer label, got {line!r}"
        )
    return SplitEntry(
        sequence_id=fields[0],
        subject=int(match.group(1)),
        action=match.group(2),
        label=int(fields[1]),
        is_train=is_train,
        line=number,
    )


def _check_labels(entries: list[SplitEntry], where: str) -> None:
    label_of: dict[str, SplitEntry] = {}
    action_of: dict[int, SplitEntry] = {}
    for entry in entries:
        first = label_of.setdefault(entry.action, entry)
        if first.label != entry.label:
            raise FPHAFormatError(
                f"{where}, line {entry.line}: action {entry.action!r} has label {entry.label}, "
                f"expected {first.label} as on line {first.line} (one label per action)"
            )
        owner = action_of.setdefault(entry.label, entry)
        if owner.action != entry.action:
            raise FPHAFormatError(
                f"{where}, line {entry.line}: label {entry.label} given to {entry.action!r}, "
                f"but line {owner.line} gives it to {owner.action!r} (one action per label)"
            )
    num_classes = len(label_of)
    for entry in entries:
        if entry.label >= num_classes:
            raise FPHAFormatError(
                f"{where}, line {entry.line}: label {entry.label} is unknown, expected 0..."
                f"{num_classes - 1} (labels must number the {num_classes} actions from 0)"
            )


def _skeleton_files(source: FPHASource) -> Iterator[tuple[str, str, bytes]]:
    """Yield (sequence id, readable location, file bytes) for every skeleton.txt of the source.

    An archive is streamed (``r|*``): members are read in storage order and never unpacked.
    """
    if source.is_archive:
        with _reading_archive(source.annotations), tarfile.open(source.annotations, "r|*") as archive:
            for member in archive:
                match = _SKELETON_PATH.search(member.name)
                if match and member.isfile():
                    handle = archive.extractfile(member)
                    assert handle is not None  # regular files always have a payload
                    yield match.group(1), f"{source.annotations}:{member.name}", handle.read()
    else:
        for path in sorted(source.annotations.glob("Subject_*/*/*/skeleton.txt")):
            match = _SKELETON_PATH.search(path.as_posix())
            if match:
                yield match.group(1), str(path), path.read_bytes()


@contextlib.contextmanager
def _reading_archive(path: Path) -> Iterator[None]:
    """Turn tarfile's and the decompressors' errors (a truncated or corrupt download raises
    a bare 'unexpected end of data') into one :class:`FPHAFormatError` naming the archive."""
    try:
        yield
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        reason = str(err) or type(err).__name__
        raise FPHAFormatError(
            f"{path}: not a complete .tar.xz/.tar.gz archive ({reason}); download it again"
        ) from None


def _split_bytes_from_archive(archive_path: Path) -> bytes | None:
    with _reading_archive(archive_path), tarfile.open(archive_path, "r|*") as archive:
        for member in archive:
            if member.isfile() and Path(member.name).name == SPLIT_FILENAME:
                handle = archive.extractfile(member)
                assert handle is not None
                return handle.read()
    return None


def _read_split(source: FPHASource) -> tuple[bytes, str]:
    if source.split_file is not None:
        return source.split_file.read_bytes(), str(source.split_file)
    if source.is_archive:
        data = _split_bytes_from_archive(source.annotations)
        if data is not None:
            return data, f"{source.annotations}:{SPLIT_FILENAME}"
    raise FileNotFoundError(
        f"FPHA split file {SPLIT_FILENAME} not found next to {source.annotations}"
        + (" nor inside it" if source.is_archive else "")
    )


def fpha_fingerprint(source: FPHASource) -> str:
    """sha256 of the source's content: the split file plus the archive bytes, or plus every
    skeleton file's relative path and bytes for a folder.

    Content rather than sizes and mtimes, so that a copied or re-downloaded dataset reuses its
    cache and an edited file, whatever its timestamp, never does.
    """
    digest = hashlib.sha256()
    split_bytes, _ = _read_split(source)
    digest.update(split_bytes)
    if source.is_archive:
        with source.annotations.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        for sequence_id, _, data in _skeleton_files(source):
            digest.update(sequence_id.encode() + b"\0" + len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def load_fpha(root: str | Path | None = None) -> SkeletonSequences:
    """Read and validate FPHA: every split entry, in split order (train block then test block).

    Empty skeleton files that the split does not list are skipped and reported in
    ``meta["skipped_empty"]`` (the public annotations have three); an empty file that the
    split lists is an error. Non-empty files outside the split are reported in
    ``meta["unused"]``.
    """
    source = resolve_fpha_root(root)
    split_bytes, split_where = _read_split(source)
    entries = parse_split(split_bytes, split_where)

    frames: dict[str, tuple[str, np.ndarray]] = {}
    for sequence_id, where, data in _skeleton_files(source):
        if sequence_id in frames:
            raise FPHAFormatError(
                f"{where}: second skeleton file for {sequence_id} (first: {frames[sequence_id][0]})"
            )
        frames[sequence_id] = (where, parse_skeleton(data, where))

    sequences: list[np.ndarray] = []
    for entry in entries:
        if entry.sequence_id not in frames:
            raise FPHAFormatError(
                f"{split_where}, line {entry.line}: {entry.sequence_id} is in the split but "
                f"{source.annotations} has no {entry.sequence_id}/skeleton.txt"
            )
        where, array = frames[entry.sequence_id]
        if len(array) == 0:
            raise FPHAFormatError(
                f"{where}, line 1: file is empty, expected frames because the split lists "
                f"{entry.sequence_id} ({split_where}, line {entry.line})"
            )
        sequences.append(array)

    listed = {entry.sequence_id for entry in entries}
    unlisted = sorted(set(frames) - listed)
    class_names = tuple(action for _, action in sorted({(e.label, e.action) for e in entries}))
    result = SkeletonSequences(
        name="fpha",
        sequences=tuple(sequences),
        labels=np.array([e.label for e in entries], dtype=np.int64),
        class_names=class_names,
        subjects=np.array([e.subject for e in entries], dtype=np.int64),
        is_train=np.array([e.is_train for e in entries], dtype=bool),
        ids=tuple(e.sequence_id for e in entries),
        meta={
            "source": str(source.annotations),
            "split_file": split_where,
            "skipped_empty": [s for s in unlisted if len(frames[s][1]) == 0],
            "unused": [s for s in unlisted if len(frames[s][1]) > 0],
        },
    )
    result.meta.update(result.counts())
    return result
