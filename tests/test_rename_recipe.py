"""scripts/rename_recipe.py: another recipe name for a folder's records, nothing else changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from record_factory import make_record
from script_module import load_script

from tcmplib import recipe as recipe_module
from tcmplib.records import read_folder

REPO = Path(__file__).resolve().parents[1]


def _rename_module() -> Any:
    return load_script("rename_recipe")


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "synthetic-book-as-written"
    folder.mkdir()
    for seed in (0, 1):
        record = make_record("baseline", 0.0, seed)
        (folder / f"{record['name']}.json").write_text(json.dumps(record))
    return folder


def test_rename_keeps_identity_and_hash_and_moves_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(recipe_module.RECIPES, "alias", recipe_module.AS_WRITTEN)
    folder = _folder(tmp_path)
    before = read_folder(folder)
    target = _rename_module().rename(folder, "as-written", "alias")
    assert target == tmp_path / "synthetic-book-alias" and not folder.exists()
    after = read_folder(target)
    assert [p.name for p, _ in after] == [p.name for p, _ in before]
    for (_, old), (_, new) in zip(before, after, strict=True):
        assert new.config.recipe == "alias"
        assert (new.hash, new.identity, new.report) == (old.hash, old.identity, old.report)


def test_rename_to_another_recipe_writes_nothing(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    texts = {p: p.read_text() for p in folder.glob("*.json")}
    with pytest.raises(ValueError, match="is not the one named 'selected'"):
        _rename_module().rename(folder, "as-written", "selected")
    assert folder.exists() and {p: p.read_text() for p in folder.glob("*.json")} == texts
