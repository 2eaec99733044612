"""The `grar` command: help, version, config printing, profiles, exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import __version__
from pipeline.cli.main import COMMANDS, main
from pipeline.config import load_params

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project's params and profiles in a temporary working folder."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"grar {__version__}"


def test_config_prints_the_resolved_params(project, capsys):
    assert main(["config", "--set", "train.crop_size=48"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = yaml.safe_load((ROOT / "params.yaml").read_text())
    expected["train"]["crop_size"] = 48
    assert printed == expected


def test_config_section(project, capsys):
    assert main(["config", "--section", "stats"]) == 0
    assert list(yaml.safe_load(capsys.readouterr().out)) == ["stats"]
    assert main(["config", "--section", "nope"]) == 2
    assert "no such section; allowed: profile, seed" in capsys.readouterr().err


def test_invalid_params_stop_every_command_with_exit_2(project, capsys):
    text = (project / "params.yaml").read_text().replace("embedded: {lr: 0.03,", "embedded: {lr: -0.03,")
    (project / "params.yaml").write_text(text)
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grar: error: params.yaml: train.schedules.embedded.lr: must be > 0")
    assert "Traceback" not in err


def test_console_script_prints_no_traceback(project):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "config", "--set", "model.backbone=resnet5"],
        capture_output=True,
        text=True,
        cwd=project,
        check=False,
    )
    assert result.returncode == 2
    assert "model.backbone: unknown value 'resnet5'" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_profile_list_marks_the_active_profile(project, capsys):
    assert main(["profile", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("* embedded") for line in lines)
    assert any(line.startswith("  paper") for line in lines)


def test_profile_use_switches_params_and_back(project, capsys):
    assert main(["profile", "use", "paper"]) == 0
    assert (project / "params.yaml").read_bytes() == (project / "profiles" / "paper.yaml").read_bytes()
    assert main(["profile", "use", "embedded"]) == 0
    assert (project / "params.yaml").read_bytes() == (project / "profiles" / "embedded.yaml").read_bytes()


def test_profile_use_keeps_local_edits_unless_forced(project, capsys):
    edited = (project / "params.yaml").read_text().replace("batch_size: 8", "batch_size: 9")
    (project / "params.yaml").write_text(edited)
    assert main(["profile", "use", "paper"]) == 2
    assert "has edits that match no profile" in capsys.readouterr().err
    assert (project / "params.yaml").read_text() == edited
    assert main(["profile", "use", "paper", "--force"]) == 0


def test_profile_use_works_when_params_is_broken(project):
    (project / "params.yaml").write_text("train: [\n")
    assert main(["profile", "use", "embedded", "--force"]) == 0


def test_unknown_profile_lists_the_names(project, capsys):
    assert main(["profile", "use", "papr"]) == 2
    assert "profile 'papr' not found; allowed: embedded, paper" in capsys.readouterr().err


def test_profile_use_with_override_files_merges_key_by_key(project, capsys):
    (project / "mine.yaml").write_text(
        "train: {batch_size: 4, schedules: {ade20k: {iterations: 7}}}\ngrid: {seeds: [3]}\n"
    )
    assert main(["profile", "use", "paper", "--with", "profiles/overrides/smoke.yaml", "--with", "mine.yaml"]) == 0
    assert "is now profile 'paper' with profiles/overrides/smoke.yaml, mine.yaml" in capsys.readouterr().out
    text = (project / "params.yaml").read_text()
    assert text.startswith("# grar profile paper with profiles/overrides/smoke.yaml, mine.yaml\n")
    params = load_params(project / "params.yaml")
    assert params.profile == "paper-smoke" and params.train.batch_size == 4  # the later file wins
    assert params.train.schedules["ade20k"].iterations == 7 and params.train.schedules["ade20k"].lr == 0.01  # merged
    assert params.train.schedules["coco_stuff"].iterations == 2 and params.train.crop_size == 48  # smoke.yaml's
    assert params.grid.seeds == (3,) and params.model.backbone == "resnet101"  # lists replace; the rest is paper's
    assert main(["profile", "list"]) == 0
    assert (
        "* paper      profiles/paper.yaml  (with profiles/overrides/smoke.yaml, mine.yaml)" in capsys.readouterr().out
    )
    assert main(["profile", "use", "embedded"]) == 0  # a composed params.yaml is no edit of the user's


def test_an_override_file_edited_since_counts_as_an_edit(project, capsys):
    (project / "mine.yaml").write_text("grid: {seeds: [3]}\n")
    assert main(["profile", "use", "paper", "--with", "mine.yaml"]) == 0
    (project / "mine.yaml").write_text("grid: {seeds: [4]}\n")
    assert main(["profile", "use", "embedded"]) == 2
    assert "has edits that match no profile" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--with missing.yaml: file not found"),
        ("train: {batch_size: -1}\n", "profiles/paper.yaml with missing.yaml: train.batch_size: must be > 0 (got -1)"),
        ("train: {batch_sise: 4}\n", "profiles/paper.yaml with missing.yaml: unknown key train.batch_sise"),
        ("- a list\n", "missing.yaml: expected a mapping of sections at the top level"),
    ],
)
def test_a_bad_override_file_is_one_line_and_params_stays(project, capsys, content, message):
    before = (project / "params.yaml").read_bytes()
    if content is not None:
        (project / "missing.yaml").write_text(content)
    assert main(["profile", "use", "paper", "--with", "missing.yaml"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert (project / "params.yaml").read_bytes() == before


def test_a_reader_that_closes_early_ends_grar_quietly_with_sigpipes_status(project):
    """`grar config | true`: the pipe is closed before grar writes; no "error" line, status 141 like `yes | true`."""
    grar = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    grar.stdout.close()  # the reader went away
    err = grar.stderr.read().decode()
    assert (grar.wait(timeout=60), err) == (141, "")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.precision=fp16", "train.precision: unknown value 'fp16'; allowed: 'bf16' or 'fp32'"),
        ("eval.fusion=sum", "eval.fusion: unknown value 'sum'; allowed: 'softmax_mean' or 'exp_sum'"),
        ("train.augment.base_size=-1", "train.augment.base_size: must be > 0 (got -1)"),
        ("model.stem=deep", "model.pretrained: imagenet: no ImageNet file is published for backbone 'tiny_resnet'"),
    ],
)
def test_a_bad_recipe_switch_is_one_line_and_exit_2(project, capsys, override, message):
    extra = ("--set", "model.pretrained=imagenet") if override.startswith("model.") else ()
    assert main(["config", "--set", override, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
