"""Run records and run identity: the hash holds everything, reading is strict, the format-1
files convert with every number kept, and `tcmp run` computes one configuration."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from record_factory import make_record
from script_module import load_script

from tcmplib import cli
from tcmplib.model import GCNConfig
from tcmplib.profiles import PROFILES
from tcmplib.pruning import METHODS
from tcmplib.recipe import RECIPES, Recipe
from tcmplib.records import RunRecord, read_folder, read_record
from tcmplib.run import DATA_SIZES, RunConfig
from tcmplib.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
BASE = RunConfig(method="tcmp", rate=0.99, seed=0, profile="smoke")

# --------------------------------------------------------------------------- the hash


# Another valid value for options whose type alone does not give one.
_ALTERNATIVES: dict[str, Any] = {
    "prior": "laplace",
    "scope": "per-tensor",
    "prior_scale": 0.01,
    "frame": "palm",
    "precision": "bf16",
    "neighbourhood": 2,
    "batch_size": 32,
    "lr_factor": 0.9,
    "checkpoint_every": 2,
    "values": "per-head",
    "attention": "bilinear",
    "threshold": "prior",
    "budget": "soft",
}


def _changed(name: str, value: Any) -> Any:
    """Another valid value of option ``name`` (now ``value``)."""
    if name in _ALTERNATIVES:
        return _ALTERNATIVES[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return value / 2 if value else 0.25
    if isinstance(value, int):
        return value + 1
    raise AssertionError(f"no other value known for {name}={value!r}")


def _patch_default(patch: pytest.MonkeyPatch, cls: type, name: str, value: Any) -> None:
    """Make ``value`` the default of dataclass field ``name`` (as an edit of the code would)."""
    defaults = list(cls.__init__.__defaults__)  # type: ignore[misc]
    names = [f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING]
    defaults[names.index(name)] = value
    patch.setattr(cls.__init__, "__defaults__", tuple(defaults))


def test_identity_holds_options_recipe_model_and_schedule_in_full() -> None:
    identity = BASE.identity()
    assert set(identity) == {
        "dataset", "method", "rate", "seed", "profile", "options", "recipe", "model", "train",
    }  # fmt: skip
    option_names = [f.name for f in dataclasses.fields(METHODS["tcmp"].options_class)]
    assert list(identity["options"]) == option_names, "every option, defaults included"
    # Every option, defaults included, but those added after the records (values and
    # attention, of Recipe and GCNConfig; label smoothing, of Recipe and TrainConfig), which
    # stay out at their defaults so that the records keep their names.
    late = ("values", "attention", "label_smoothing", "precision", "anneal")
    recipe = {k: v for k, v in dataclasses.asdict(Recipe()).items() if k not in late}
    assert identity["recipe"] == recipe
    gcn = [f.name for f in dataclasses.fields(GCNConfig) if f.name not in (*DATA_SIZES, *late)]
    assert list(identity["model"]) == gcn
    train = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("device", *late)]
    assert list(identity["train"]) == train, "the full schedule, not the device"


@pytest.mark.parametrize(
    "change",
    [
        {"dataset": "fpha"},
        {"method": "mp"},
        {"rate": 0.95},
        {"seed": 1},
        {"profile": "book"},
        {"recipe": next(name for name in RECIPES if name != "as-written")},
    ],
)
def test_every_config_field_changes_the_hash(change: dict[str, Any]) -> None:
    assert dataclasses.replace(BASE, **change).hash != BASE.hash


@pytest.mark.parametrize("method", [k for k, m in METHODS.items() if m.tc_by_design is not None])
def test_every_method_option_and_its_default_change_the_hash(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dataclasses.replace(BASE, method=method, rate=0.5)
    options = METHODS[method].options_class
    assert dataclasses.fields(options), f"{method} has options"
    for field in dataclasses.fields(options):
        value = _changed(field.name, field.default)
        assignment = [f"{field.name}={json.dumps(value)}"]
        run = config
        if field.metadata.get("inert_without"):
            # Inert under a recipe whose option it needs is zero (BASE's): the same run, the
            # same name; under a recipe that sets that option, an option like any other.
            assert not getattr(config.recipe_options(), field.metadata["inert_without"])
            assert config.with_options(assignment).hash == config.hash
            run = dataclasses.replace(config, recipe="selected")
            assert getattr(run.recipe_options(), field.metadata["inert_without"])
        before = run.hash
        assert run.with_options(assignment).hash != before
        with monkeypatch.context() as patch:  # a new default, nothing set: a new hash too
            _patch_default(patch, options, field.name, value)
            assert run.hash != before, f"default of {method} option {field.name}"


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Recipe)])
def test_every_recipe_default_changes_the_hash(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = BASE.hash
    value = _changed(name, getattr(Recipe(), name))
    _patch_default(monkeypatch, Recipe, name, value)
    monkeypatch.setitem(RECIPES, "as-written", Recipe())
    assert BASE.hash != before


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(GCNConfig)])
def test_every_model_default_changes_the_hash_unless_the_data_fixes_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = BASE.hash
    _patch_default(monkeypatch, GCNConfig, name, _changed(name, getattr(GCNConfig(), name)))
    # The data set fixes its sizes, and the recipe sets dropout, neighbourhood, values and
    # attention (their GCNConfig defaults are never used; the recipe's are, see above).
    set_by_recipe = ("dropout", "neighbourhood", "values", "attention")
    used = name not in DATA_SIZES and name not in set_by_recipe
    assert (BASE.hash != before) == used


@pytest.mark.parametrize(
    "name", [f.name for f in dataclasses.fields(TrainConfig) if f.name != "device"]
)
def test_every_training_default_changes_the_hash(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = BASE.hash
    value = _changed(name, getattr(TrainConfig(), name))
    # The profile sets epochs, eval_every, checkpoint_every and seed: change those there.
    profile = PROFILES["smoke"]
    if name in ("epochs", "eval_every"):
        monkeypatch.setitem(PROFILES, "smoke", dataclasses.replace(profile, **{name: value}))
    elif name == "checkpoint_every":
        monkeypatch.setitem(PROFILES, "smoke", dataclasses.replace(profile, checkpoint_every=value))
    elif name == "seed":
        assert dataclasses.replace(BASE, seed=1).hash != before
        return
    else:
        _patch_default(monkeypatch, TrainConfig, name, value)
    # The recipe sets its optimizer settings (weight decay): their TrainConfig defaults are
    # never used, the recipe's are (see the recipe test above).
    assert (BASE.hash != before) == (name not in Recipe().train_overrides())


def test_hash_is_independent_of_the_device_and_of_the_recipes_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "device" not in json.dumps(BASE.identity())
    monkeypatch.setitem(RECIPES, "same", Recipe())
    assert dataclasses.replace(BASE, recipe="same").hash == BASE.hash


def test_set_rejects_unknown_keys_and_bad_values_in_one_line() -> None:
    with pytest.raises(ValueError, match="--set lambda: tcmp has no such option; expected one of"):
        BASE.with_options(["lambda=1"])
    with pytest.raises(ValueError, match="TCMPOptions.ste_tau: expected a positive number"):
        BASE.with_options(["ste_tau=-1"])
    with pytest.raises(ValueError, match="expected key=value"):
        BASE.with_options(["ste_tau"])
    assert BASE.with_options(["band_steps=4"]).options == (("band_steps", 4.0),)
    assert BASE.with_options(["band_steps=4"]).hash == BASE.with_options(["band_steps=4.0"]).hash


# --------------------------------------------------------------------------- reading


def test_a_record_survives_its_json_and_edits_are_caught(tmp_path: Path) -> None:
    document = make_record("tcmp", 0.99, 0, profile="smoke", class_avg_accuracy=0.7)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document))
    record = read_record(path)
    assert isinstance(record, RunRecord) and record.to_json() == document
    assert record.hash == BASE.hash and record.name == BASE.name
    document["identity"]["rate"] = 0.5
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"r\.json: field 'hash': .* the file was edited"):
        read_record(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("identity"), "missing field 'identity'"),
        (lambda d: d["report"].pop("kept_weights"), "missing field 'report.kept_weights'"),
        (lambda d: d["provenance"].pop("torch"), "missing field 'provenance.torch'"),
        (lambda d: d["report"].update(percent_ac=True), "field 'report.percent_ac': unexpected"),
        (lambda d: d["config"].pop("seed"), "field 'config': missing field"),
        (lambda d: d.update(kind="cv-fold"), "expected a run record"),
    ],
)
def test_a_bad_record_is_one_line_naming_file_and_field(
    tmp_path: Path, edit: Any, message: str
) -> None:
    document = make_record("mp", 0.5)
    edit(document)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message) as info:
        read_folder(tmp_path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- migration


def _migrate_module() -> Any:
    return load_script("migrate_results")


def _format1(record: dict[str, Any], revision: int = 1) -> dict[str, Any]:
    """A format-1 result file with the numbers of ``record`` (as the old sweep wrote it)."""
    migrate = _migrate_module()
    config = {k: v for k, v in record["config"].items() if k not in ("recipe", "options")}
    old = {
        "format": 1,
        "config": config,
        "train_config": record["identity"]["train"],
        "report": record["report"],
        "history": record["history"],
        "tensors": record["tensors"],
        "provenance": {k: v for k, v in record["provenance"].items() if k != "resumed"},
    }
    old["config_hash"] = migrate.format1_hash(old, revision)
    return old


def test_migration_keeps_every_number_and_renames_the_structure(tmp_path: Path) -> None:
    migrate = _migrate_module()
    tensors = [{"tensor": "wv", "weights": 40, "kept": 6, "effective": 6}]
    history = [{"epoch": 50, "loss": 0.25, "test_class_avg_accuracy": 0.6875}]
    new = make_record("tcmp", 0.99, 0, profile="smoke", history=history, tensors=tensors,
                      class_avg_accuracy=0.640625, percent_ac=99.5)  # fmt: skip
    old = _format1(new, revision=2)
    name = f"tcmp_rate0.9900_seed0_{old['config_hash']}"
    (tmp_path / f"{name}.json").write_text(json.dumps(old))
    (tmp_path / "networks").mkdir()
    (tmp_path / "networks" / f"{name}.json").write_text("{}")
    assert migrate.main([str(tmp_path)]) == 0
    (path, record), = read_folder(tmp_path)  # fmt: skip
    assert path.stem == BASE.name and record.hash == BASE.hash, "hash from the full identity"
    assert record.report.to_dict() == {**old["report"], "history": old["history"]}
    assert [dataclasses.asdict(t) for t in record.tensors or ()] == tensors
    assert record.provenance.resumed is None and record.code is None
    assert (tmp_path / "networks" / f"{BASE.name}.json").is_file()
    assert not (tmp_path / "networks" / f"{name}.json").exists()
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*.json")}
    assert migrate.main([str(tmp_path)]) == 0, "a second pass"
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*.json")} == before


def test_migration_needs_code_for_runs_of_code_the_library_no_longer_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate = _migrate_module()
    new = make_record("tcmp", 0.99, 0, profile="smoke")
    old = _format1(new, revision=1)
    del old["report"]["options"]["band_steps"]  # as revision 1 had it
    old["config_hash"] = migrate.format1_hash(old, 1)
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert migrate.main([str(tmp_path)]) == 2
    assert "revision 1 of tcmp" in capsys.readouterr().err
    assert migrate.main([str(tmp_path), "--code", "revision 1"]) == 0
    (_, record), = read_folder(tmp_path)  # fmt: skip
    assert record.code == "revision 1" and "band_steps" not in record.identity["options"]
    assert record.hash != BASE.hash, "never passes for a run of the current configuration"


# --------------------------------------------------------------------------- tcmp run


def test_tcmp_run_help_and_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--help"])
    assert exit_info.value.code == 0 and "--set KEY=VALUE" in capsys.readouterr().out
    args = ["run", "--method", "tcmp", "--rate", "0.99", "--profile", "smoke", "--dry-run"]
    assert cli.main([*args, "--set", "band_steps=4"]) == 0
    out = capsys.readouterr().out
    assert '"band_steps": 4.0' in out and BASE.with_options(["band_steps=4"]).hash in out
    assert cli.main([*args, "--set", "nope=1"]) == 2
    assert "tcmp has no such option" in capsys.readouterr().err
    assert cli.main(["run", "--method", "tcmp", "--dry-run"]) == 2
    assert "--rate: tcmp prunes; expected a rate" in capsys.readouterr().err


def test_tcmp_run_writes_its_record_and_reuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "--method", "mp-oneshot", "--rate", "0.9", "--profile", "smoke",
            "--device", "cpu", "--results", str(tmp_path), "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    (path, record), = read_folder(tmp_path)  # fmt: skip
    config = RunConfig(method="mp-oneshot", rate=0.9, profile="smoke")
    assert record.hash == config.hash and (tmp_path / "networks" / path.name).is_file()
    assert record.report.kept_weights == round(0.1 * GCNConfig().num_weights())
    assert cli.main(args) == 0 and "computed already" in capsys.readouterr().out
