"""Convert the result files of format 1 in a results folder into run records (format 2).

    python scripts/migrate_results.py results/fpha-paper results/synthetic-book
    python scripts/migrate_results.py results/fpha-paper-superseded --code "TEXT"

Format 1 named a run by the hash of its short configuration, its profile's schedule and a
hand-bumped method revision; format 2 (:mod:`tcmplib.records`) by the hash of its full
identity (every option of the method and of the recipe with its defaults, the model's
configuration, the full schedule; :meth:`tcmplib.run.RunConfig.identity`). For every file of
format 1 in a folder this script

1. checks the old hash against the old formula (the file is what its name says), which also
   tells which revision of the method computed it;
2. builds the run's identity as the library computes it now and checks that the file
   recorded the same schedule, method options and recipe options (the model's configuration
   was not recorded; every format-1 run trained the default network, the only one the
   library had);
3. writes the record under its new name, renames the network structure
   (``networks/<name>.json``) and the names in ``benchmarks/*.json``, removes the old file,
   and reads the new record back to check that every number (report, history, tensors,
   provenance) is the one of the old file.

A file computed by code the library no longer has (a method revision other than the current
one, or options that the current options class does not have) is converted only with
``--code TEXT``: the text says which code computed it, goes into the record's ``code``
field and into its hash, and the identity holds the options the run recorded. Without
``--code`` such a file stops the script with a message naming it.

Records already of format 2 are read and checked, not rewritten: running the script twice
changes nothing. Any folder can be given, e.g. one written by a sweep still in the old format.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from tcmplib.pruning import PruneReport
from tcmplib.recipe import AS_WRITTEN
from tcmplib.records import (
    STRUCTURES_FOLDER,
    Provenance,
    RunRecord,
    TensorRow,
    identity_hash,
    read_record,
    record_path,
    write_record,
)
from tcmplib.run import RunConfig
from tcmplib.train import atomic_write

#: The methods revised once under format 1 (learning rate capped by the switching band),
#: with the revision that the current code is. Format 1 hashed a revision from 2 on only.
FORMAT1_REVISIONS = {"mp": 2, "tcmp": 2}

_PROVENANCE_OPTIONAL = ("cpu", "cpu_capability", "resumed")


def format1_hash(data: dict[str, Any], revision: int) -> str:
    """The name hash that format 1 gave a run (tcmplib before the run records)."""
    config = {key: value for key, value in data["config"].items() if key != "recipe"}
    key: dict[str, Any] = {"format": 1, "config": config, "train": data["train_config"]}
    recipe = data.get("recipe")
    if recipe is not None:  # only the options switched on were hashed
        changes = {k: v for k, v in recipe.items() if getattr(AS_WRITTEN, k) != v}
        if changes:
            key["recipe"] = changes
    if revision > 1:
        key["revision"] = revision
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def old_revision(path: Path, data: dict[str, Any]) -> int:
    """The method revision whose format-1 hash is the file's (1 or the method's current)."""
    current = FORMAT1_REVISIONS.get(data["config"]["method"], 1)
    for revision in sorted({1, current}, reverse=True):
        if format1_hash(data, revision) == data["config_hash"]:
            return revision
    raise ValueError(f"{path}: config_hash {data['config_hash']!r} is not the hash of its config")


def convert(path: Path, data: dict[str, Any], code: str | None) -> RunRecord:
    """The format-2 record of one format-1 file (checked, not written)."""
    short = data["config"]
    config = RunConfig(
        dataset=short["dataset"], method=short["method"], rate=short["rate"],
        seed=short["seed"], profile=short["profile"], recipe=short.get("recipe", "as-written"),
    )  # fmt: skip
    identity = config.identity()
    revision = old_revision(path, data)
    recorded = {
        "train": data["train_config"],
        "options": data["report"]["options"],
        "recipe": data.get("recipe", identity["recipe"]),
    }
    differs = [key for key, value in recorded.items() if value != identity[key]]
    current_code = revision == FORMAT1_REVISIONS.get(config.method, 1) and not differs
    if not current_code and code is None:
        what = f"revision {revision} of {config.method}" + (
            f", recorded {', '.join(differs)} differ from the current ones" if differs else ""
        )
        raise ValueError(
            f"{path}: computed by code the library no longer has ({what}); convert it with "
            "--code TEXT saying which"
        )
    if "train" in differs or "recipe" in differs:
        raise ValueError(f"{path}: recorded {' and '.join(differs)} differ from its config's")
    record_code = None
    if not current_code:
        identity = {**identity, "options": recorded["options"]}  # what the run was given
        record_code = code
    report = PruneReport.from_dict(data["report"], data["history"])
    tensors = data.get("tensors")
    old = data["provenance"]
    return RunRecord(
        config=config,
        identity=identity,
        hash=identity_hash(identity, record_code),
        report=report,
        tensors=None if tensors is None else tuple(TensorRow(**row) for row in tensors),
        provenance=Provenance(**{**dict.fromkeys(_PROVENANCE_OPTIONAL), **old}),
        code=record_code,
    )


def same_numbers(old: Any, new: Any) -> bool:
    """Equal, float for float (NaN equal to NaN), through dicts and lists."""
    if isinstance(old, dict) and isinstance(new, dict):
        return old.keys() == new.keys() and all(same_numbers(old[k], new[k]) for k in old)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(
            same_numbers(a, b) for a, b in zip(old, new, strict=True)
        )
    if isinstance(old, float) and isinstance(new, float) and math.isnan(old):
        return math.isnan(new)
    return type(old) is type(new) and old == new


def check_numbers(path: Path, data: dict[str, Any], record: RunRecord) -> None:
    """Every number of the old file is the new record's (raises naming what differs)."""
    new = record.to_json()
    pairs = {
        "report": ({k: v for k, v in data["report"].items()}, new["report"]),
        "history": (data["history"], new["history"]),
        "tensors": (data.get("tensors"), new["tensors"]),
        "provenance": (
            data["provenance"],
            {k: v for k, v in new["provenance"].items() if k in data["provenance"]},
        ),
    }
    for section, (before, after) in pairs.items():
        if not same_numbers(before, after):
            raise RuntimeError(f"{path}: {section} differs after the conversion")


def migrate_folder(folder: Path, code: str | None) -> int:
    """Convert every format-1 file of ``folder``; returns how many."""
    converted = 0
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != 1:
            read_record(path)  # format 2 already (or an error naming the file)
            continue
        record = convert(path, data, code)
        target = record_path(folder, record.name)
        write_record(record, target)
        check_numbers(path, data, read_record(target))
        structure = folder / STRUCTURES_FOLDER / path.name
        if structure.is_file():
            structure.replace(folder / STRUCTURES_FOLDER / f"{record.name}.json")
        path.unlink()  # never the target: the two formats hash differently
        converted += 1
    rename_in_benchmarks(folder)
    return converted


def rename_in_benchmarks(folder: Path) -> None:
    """Network names in ``<folder>/benchmarks/*.json`` that name no record of the folder take
    the name of the one record of the same method, rate and seed (names end in the hash)."""
    names = [path.stem for path in folder.glob("*.json")]
    for path in sorted((folder / "benchmarks").glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        changed = False
        for row in document.get("rows", []):
            if row.get("name") in names:
                continue
            prefix = str(row.get("name")).rsplit("_", 1)[0] + "_"
            matches = [name for name in names if name.startswith(prefix)]
            if len(matches) != 1:
                raise ValueError(f"{path}: network {row.get('name')!r} matches no single record")
            row["name"], changed = matches[0], True
        if changed:
            text = json.dumps(document, indent=2) + "\n"
            atomic_write(path, lambda handle, text=text: handle.write(text.encode()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="results folders")
    parser.add_argument(
        "--code",
        default=None,
        help="which code computed the runs, for runs of a method revision the library no "
        "longer has (goes into each record and its hash)",
    )
    args = parser.parse_args(argv)
    try:
        for folder in args.folders:
            if not folder.is_dir():
                raise ValueError(f"{folder}: expected a results folder")
            converted = migrate_folder(folder, args.code)
            print(f"{folder}: {converted} converted (numbers checked), the rest already records")
    except ValueError as err:
        print(f"migrate_results: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
