"""The chapters read as narrative: no code cell longer than MAX_LINES lines.

Text-building and ``glue`` boilerplate belong in the library (``tcmplib.chapter_numbers``),
where they are typed and tested; a chapter cell calls one function.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MAX_LINES = 20
CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "chapters").glob("*.ipynb"))


def code_cell_lines(path: Path) -> list[int]:
    """The number of source lines of each code cell of a notebook (trailing newlines aside)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in cells if c["cell_type"] == "code"]  # fmt: skip
    return [len(source.rstrip("\n").split("\n")) if source.strip() else 0 for source in sources]


def test_there_are_chapters() -> None:
    assert len(CHAPTERS) >= 10


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_no_code_cell_is_longer_than_the_limit(path: Path) -> None:
    lines = code_cell_lines(path)
    long = [(index, n) for index, n in enumerate(lines) if n > MAX_LINES]
    assert not long, (
        f"{path.name}: code cells (index among code cells, lines) over {MAX_LINES}: {long}"
    )


def test_line_count(tmp_path: Path) -> None:
    notebook = {"cells": [{"cell_type": "code", "source": ["a = 1\n", "b = 2\n"]},
                          {"cell_type": "markdown", "source": "x\ny\nz"},
                          {"cell_type": "code", "source": "\n"}]}  # fmt: skip
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    assert code_cell_lines(path) == [2, 0]
