"""Rename CV fold records to the hash of their full identity (the whole recipe, every default).

Fold records written before the identity held the full recipe were named by the recipe's
switched-on options only. This recomputes each record's identity and hash from the recipe
and settings stored in it, checks that nothing else changes, and rewrites the record under
its new name (atomically; the numbers are copied, never recomputed). Idempotent.

    python scripts/rehash_cv.py results/fpha-cv
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tcmplib.recipe import Recipe
from tcmplib.select import FoldConfig, cv_records, record_path
from tcmplib.train import atomic_write


def rehash(folder: Path) -> int:
    moved = 0
    for record in cv_records(folder):
        old = folder / f"fold{record['identity']['fold']}of{record['identity']['folds']}_" \
            f"e{record['epochs']}_s{record['identity']['seed']}_{record['hash']}.json"
        identity = record["identity"]
        config = FoldConfig(Recipe(**record["recipe"]), identity["fold"], identity["folds"],
                            record["epochs"], identity["seed"], identity["dataset"])  # fmt: skip
        if config.hash == record["hash"]:
            continue
        if config.identity()["train"] != identity["train"]:
            raise ValueError(f"{old}: its training schedule differs from the current one")
        updated = {**record, "hash": config.hash, "identity": config.identity()}
        text = json.dumps(updated, indent=1) + "\n"
        atomic_write(record_path(folder, config), lambda handle: handle.write(text.encode()))
        old.unlink()
        moved += 1
    return moved


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {rehash(Path(name))} records renamed")
