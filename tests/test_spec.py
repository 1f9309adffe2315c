"""A fit is a spec: defaults filled in, a stable hash, a YAML / JSON round trip, written into
every run, and a run's spec fits the same run again (same tensors on CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from workbench import cli
from workbench.methods import METHODS
from workbench.spec import FitSpec, SpecError, spec_hash
from workbench.store import schema
from workbench.store.runs import RunStore, bundled_store


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_spec_fills_in_every_default_and_hashes_what_the_fit_is():
    short = FitSpec.from_text("method: site\ntasks: antonym\nsettings: {steps: 20, lr: 1}\n")
    assert short.method == "SITE" and [t.name for t in short.tasks] == ["antonym"]
    assert short.settings == {**METHODS["SITE"].Config().as_dict(), "steps": 20, "lr": 1.0}
    assert short.tasks[0].sha256 and short.tasks[0].path == "data/tasks/antonym.json"
    same = FitSpec.from_text(json.dumps({"settings": {"lr": 1.0, "steps": 20}, "tasks": ["antonym"],
                                         "method": "SITE", "device": "cuda"}))
    assert same.hash == short.hash  # key order, 1 vs 1.0 and the device do not change what the fit is
    assert (
        FitSpec.from_text("method: SITE\ntasks: antonym\nsettings: {steps: 21, lr: 1}\n").hash != short.hash
    )
    assert (
        FitSpec.from_text("method: SITE\ntasks: antonym\nsettings: {steps: 20, lr: 1}\nbos: false\n").hash
        != short.hash
    )
    assert FitSpec.from_text(short.to_yaml()) == short and FitSpec.from_text(short.to_json()) == short


@pytest.mark.parametrize("text, message", [
    ("method: NOPE\ntasks: antonym", "Unknown method 'NOPE'"),
    ("method: ATV\ntasks: antonym\nsettings: {scale: .nan}", "scale must be a finite number"),
    ("method: ATV\ntasks: antonym\nsettings: {encoder_lr: -1}", "encoder_lr must be > 0"),
    ("method: LTV\ntasks: antonym\nsettings: {top_k: 3}", "LTV has no setting top_k"),
    ("method: LTV\ntasks: [antonym, uppercase]", "LTV is fitted per task"),
    ("method: TV\ntasks: []", "'tasks' must list"),
    ("method: TV\ntasks: antonym\ncolour: red", "unknown field(s) colour"),
    ("method: TV\ntasks: [{name: antonym, sha256: '00'}]", "has changed since the spec was written"),
    ("[unclosed", "not valid YAML"),
])
def test_a_spec_that_cannot_name_a_fit_is_refused_saying_why(text, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FitSpec.from_text(text).load_tasks()


def test_a_task_file_changed_after_the_spec_is_refused(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([{"input": f"w{i}", "output": f"W{i}"} for i in range(12)]))
    spec = FitSpec.from_text(f"method: TV\ntasks: ['{path}']")
    assert [t.name for t in spec.load_tasks()] == ["pairs"]
    path.write_text(json.dumps([{"input": f"w{i}", "output": f"V{i}"} for i in range(12)]))
    with pytest.raises(SpecError, match="has changed"):
        spec.load_tasks()


def test_fit_from_a_yaml_spec_print_its_spec_and_fit_it_again_gives_the_same_tensors(tmp_path, capsys):
    store = tmp_path / "runs"
    settings = METHODS["SITE"].tiny_settings
    first = tmp_path / "site.yaml"
    first.write_text(f"method: SITE\nmodel: tiny-llama\ntasks: [antonym]\nsettings: {json.dumps(settings)}\n")
    rc, _, err = run(["fit", "--spec", first, "--store", store, "--no-progress", "--limit", "4"], capsys)
    assert rc == 0, err
    (run_id,) = RunStore(store).list()["id"]
    rc, printed, err = run(["runs", "spec", run_id, "--store", store], capsys)
    assert rc == 0, err
    again = tmp_path / "again.yaml"
    again.write_text(printed)
    assert FitSpec.from_file(again) == FitSpec.from_dict(RunStore(store).load(run_id).meta["spec"])
    assert FitSpec.from_file(again).hash == FitSpec.from_file(first).hash
    rc, _, err = run(["fit", "--spec", again, "--store", store, "--no-progress", "--no-eval"], capsys)
    assert rc == 0, err
    runs = RunStore(store).list()
    assert len(runs) == 2
    a, b = (RunStore(store).load(i) for i in runs["id"])
    assert a.meta["spec_hash"] == b.meta["spec_hash"]
    assert a.tensors.keys() == b.tensors.keys()
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key
    rc, printed, _ = run(["runs", "spec", run_id, "--store", store, "--format", "json"], capsys)
    assert json.loads(printed)["settings"]["steps"] == settings["steps"]


def test_fit_refuses_settings_out_of_bounds_naming_the_flag(capsys):
    for flags, message in ([["--scale", "nan"], "--scale must be a finite number"],
                           [["--encoder-lr", "-1"], "--encoder-lr must be > 0"],
                           [["--per-task", "0"], "--per-task must be >= 1"]):
        rc, _, err = run(
            ["fit", "--method", "ATV", "--model", "tiny-llama", "--task", "antonym", *flags], capsys
        )
        assert rc == 2 and message in err, err
    rc, _, err = run(["fit", "--spec", "x.yaml", "--task", "antonym"], capsys)
    assert rc == 2 and "--spec names the whole fit; drop --task" in err


def test_fit_help_shows_every_setting_with_its_real_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    from workbench.methods.settings import fields

    for name, method in METHODS.items():
        for f in fields(method.Config):
            assert f.flag in out, (name, f.name)
    assert "400 (LTV / SITE), 1500 (ATV)" in out  # --steps: each method's own default
    for f in fields(METHODS["ATV"].Config):  # every ATV setting is reachable
        assert f.flag in out


def test_a_run_saved_before_the_spec_gets_the_spec_its_fields_name(tmp_path, capsys):
    store = tmp_path / "runs"
    rc, _, err = run(["fit", "--method", "TV", "--model", "tiny-llama", "--task", "antonym", "--prompts", "3",
                      "--shots", "1", "--no-eval", "--store", store, "--no-progress"], capsys)
    assert rc == 0, err
    (meta_path,) = store.glob("*/meta.json")
    meta = json.loads(meta_path.read_text())
    old = {k: v for k, v in meta.items() if k not in ("spec", "spec_hash")}
    meta_path.write_text(json.dumps({**old, "schema": 1}))
    upgraded = schema.upgrade(json.loads(meta_path.read_text()), lambda name: None)
    assert upgraded["spec_hash"] == meta["spec_hash"]  # the same fit; only where it ran is not known
    assert upgraded["spec"]["device"] is None and upgraded["migrated_from"] == 1
    rc, out, _ = run(["runs", "migrate", "--store", store], capsys)
    assert rc == 0 and "rewrote the metadata of 1 runs" in out
    assert json.loads(meta_path.read_text())["schema"] == schema.SCHEMA_VERSION


def test_every_bundled_run_names_a_spec_that_can_be_fitted_again():
    store = bundled_store()
    for run_id in store.list()["id"]:
        saved = store.load(run_id)
        spec = FitSpec.from_dict(saved.meta["spec"], where=run_id)
        assert spec.hash == saved.meta["spec_hash"] == spec_hash(saved.meta["spec"]), run_id
        assert spec.method == saved.method and [t.name for t in spec.load_tasks()] == saved.tasks
