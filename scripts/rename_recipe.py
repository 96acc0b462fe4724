"""Give the records of a results folder another recipe name, and move the folder to match.

When cross-validation selects a new recipe, ``RECIPES["selected"]`` names the new one and the
recipe it replaces gets a name of its own (e.g. ``round-1``). Records keep their identity and
hash (both hold the recipe's options, not its name); only the name in their ``config``
changes, and the folder moves from ``<dataset>-<profile>-<old>`` to
``<dataset>-<profile>-<new>``. Every record is checked first: the recipe the new name stands
for must be the one in the record's identity, or nothing is written. Files are rewritten
atomically; structures (``networks/``) move with the folder.

Usage::

    python scripts/rename_recipe.py results/fpha-paper-selected selected round-1
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from tcmplib.recipe import get_recipe
from tcmplib.records import read_folder, write_record
from tcmplib.run import identity_options


def rename(folder: Path, old: str, new: str) -> Path:
    """Rewrite every record of ``folder`` from recipe ``old`` to ``new``; returns the new folder."""
    if not folder.name.endswith(f"-{old}"):
        raise ValueError(f"{folder}: expected a folder named <dataset>-<profile>-{old}")
    target = folder.with_name(folder.name[: -len(old)] + new)
    if target.exists():
        raise ValueError(f"{target}: exists already")
    recipe = identity_options(get_recipe(new))
    records = read_folder(folder)
    for path, record in records:
        if record.config.recipe != old:
            raise ValueError(f"{path}: recipe {record.config.recipe!r}, expected {old!r}")
        if record.identity["recipe"] != recipe:
            raise ValueError(f"{path}: its recipe is not the one named {new!r}")
    for path, record in records:
        renamed = replace(record, config=replace(record.config, recipe=new))
        assert renamed.name == record.name  # the hash does not hold the name
        write_record(renamed, path)
    folder.rename(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("old")
    parser.add_argument("new")
    args = parser.parse_args()
    try:
        target = rename(args.folder, args.old, args.new)
    except ValueError as err:
        print(f"rename_recipe: {err}", file=sys.stderr)
        return 2
    print(f"{args.folder} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
