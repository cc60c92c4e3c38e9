"""The command line: help, the merge command on params files, config errors."""

import argparse
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import checkpoint, cli, config


def test_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "jaxrec.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("demo", "merge", "mdmt", "mergerec"):
        assert cmd in out


def test_merge_command_equals_library(tmp_path):
    base = {"w": jnp.zeros((3, 2)), "b": jnp.ones(2)}
    fts = [{"w": jnp.full((3, 2), float(i + 1)), "b": jnp.ones(2) * (i - 1)} for i in range(3)]
    paths = [checkpoint.save_params(tmp_path / f"ft{i}.safetensors", f) for i, f in enumerate(fts)]
    checkpoint.save_params(tmp_path / "base.safetensors", base)
    out = tmp_path / "merged.safetensors"
    base_file = str(tmp_path / "base.safetensors")
    rc = cli.main(
        [
            "merge",
            "--method",
            "task_arithmetic",
            "--base",
            base_file,
            "--finetuned",
            *map(str, paths),
            "--out",
            str(out),
            "--set",
            "scale=0.5",
        ]
    )
    assert rc == 0
    merged = checkpoint.load_params(out, target=base)
    np.testing.assert_allclose(np.asarray(merged["w"]), 0.5 * (1 + 2 + 3))
    np.testing.assert_allclose(np.asarray(merged["b"]), 1 + 0.5 * ((-1 + 0 + 1) - 3))


def test_bad_config_override_is_a_clear_error(tmp_path, capsys):
    rc = cli.main(
        [
            "mergerec",
            "run",
            "--config",
            "configs/mergerec/main.py:tiny",
            "--workdir",
            str(tmp_path / "wd"),
            "--set",
            "learn.nope=1",
        ]
    )
    assert rc == 2
    assert "unknown config key 'learn.nope'" in capsys.readouterr().err
    assert not (tmp_path / "wd").exists()


def _main(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize(
    "command, spec, given",
    [
        ("mdmt train", "configs/mdmt/table1.py:tiny", "CompareConfig"),
        ("mdmt train", "configs/mergerec/main.py:tiny", "MergeRecConfig"),
        ("mdmt compare", "configs/mdmt/saf.py:tiny", "ExperimentConfig"),
        ("mergerec run", "configs/mdmt/saf.py:tiny", "ExperimentConfig"),
    ],
)
def test_wrong_config_kind_is_one_error_before_any_write(tmp_path, capsys, command, spec, given):
    wd = tmp_path / "wd"
    rc, _, err = _main([*command.split(), "--config", spec, "--workdir", str(wd)], capsys)
    expected = {"mdmt train": "ExperimentConfig", "mdmt compare": "CompareConfig"}
    want = expected.get(command, "MergeRecConfig")
    assert rc == 2 and not wd.exists()
    assert f"jaxrec {command} expects a config of class {want}, but {spec} gives a {given}" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "merges=ties,tie"], "merges='tie' is not valid; choose one of"),
        (["--set", "learned=mergerec:layr"], "learned='mergerec:layr' is not valid"),
        (["--set", "data.paths=x.tar.gz"], "does not apply to data.source='synthetic'"),
        (
            ["--set", "data.source=files", "--set", "data.paths=nowhere/x.tar.gz"],
            "paths not found: data.paths=nowhere/x.tar.gz",
        ),
        (["--set", "backbone.path=nowhere"], "paths not found: backbone.path=nowhere"),
    ],
)
def test_mergerec_config_errors_before_any_write(tmp_path, capsys, argv, message):
    wd = tmp_path / "wd"
    base = ["mergerec", "run", "--config", "configs/mergerec/main.py", "--workdir", str(wd)]
    rc, _, err = _main([*base, *argv], capsys)
    assert rc == 2 and message in err and not wd.exists()


def test_compare_run_overrides_are_validated_up_front(tmp_path, capsys):
    argv = ["mdmt", "compare", "--config", "configs/mdmt/table1.py:tiny,models=mlp,seeds=1"]
    argv += ["--workdir", str(tmp_path / "wd"), "--set", "run_overrides=max_stepz=2"]
    rc, _, err = _main(argv, capsys)
    assert rc == 2 and "run_overrides on run 'MLP': unknown config key 'max_stepz'" in err


def test_check_validates_prints_and_writes_nothing(tmp_path, capsys):
    wd = tmp_path / "wd"
    argv = ["mdmt", "train", "--config", "configs/mdmt/baseline.py:mmoe", "--workdir", str(wd)]
    argv += ["--set", "data_kwargs.path=" + str(tmp_path), "--set", "data=aliccp", "--check"]
    rc, out, _ = _main(argv, capsys)
    assert rc == 0 and not wd.exists()
    assert '"path": "' + str(tmp_path) in out and "config OK" in out
    rc, _, err = _main(
        [*argv[:-5], "--set", "data_kwargs.path=/nowhere", "--set", "data=aliccp"], capsys
    )
    assert rc == 2 and "data_kwargs.path=/nowhere" in err


def test_empty_workdir_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["mdmt", "train", "--config", "configs/mdmt/saf.py:tiny", "--workdir", ""])
    assert e.value.code == 2 and "--workdir must not be empty" in capsys.readouterr().err


def test_version_and_verbose_anywhere(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("jaxrec 0.")
    parser = cli.build_parser()
    spec = ["--config", "configs/mdmt/saf.py", "--workdir", "w"]
    assert parser.parse_args(["-v", "mdmt", "train", *spec]).verbose
    assert parser.parse_args(["mdmt", "train", *spec, "-v"]).verbose
    assert parser.parse_args(["mergerec", "run", "--verbose", *spec]).verbose
    assert parser.parse_args(["configs", "-v"]).verbose
    assert not parser.parse_args(["mdmt", "train", *spec]).verbose


def test_help_examples_are_accepted_by_real_configs():
    """Every ``--set`` example in ``--help`` texts applies to a config file of that command."""
    import re

    def helps(parser):
        yield parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if name != "merge":  # its --set are method hyper-parameters, not configs
                        yield from helps(sub)

    examples = set()  # runs of consecutive --set examples, applied together
    for text in [cli.__doc__, *helps(cli.build_parser())]:
        for run in re.findall(r"(?:--set [\w.]+=[^\s,)\]]+\s*)+", " ".join(text.split())):
            examples.add(tuple(re.findall(r"--set ([\w.]+=[^\s,)\]]+)", run)))
    examples -= {("KEY=VALUE",), ("k=v",), ("key=value",)}  # placeholders of the synopsis
    assert {("learning_rate=1e-3",), ("learn.steps=50",)} <= examples
    assert ("data=aliccp", "data_kwargs.path=DIR") in examples
    specs = ["configs/mdmt/saf.py", "configs/mergerec/main.py"]
    for example in examples:
        ok = []
        for spec in specs:
            try:
                ok.append(config.load_config(spec, [e.replace("DIR", "d") for e in example]))
            except ValueError:
                pass
        assert ok, f"--set {example} is accepted by no config"


def test_configs_lists_files_tokens_and_help(capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    rc, out, _ = _main(["configs"], capsys)
    assert rc == 0
    for file in ("mdmt/saf.py", "mdmt/baseline.py", "mdmt/table1.py", "mergerec/main.py"):
        assert f"configs/{file}" in out
    assert "no_sl " in out and "ablation: no stable learning" in out
    rc, out, _ = _main(["configs", "configs/mergerec/scarcity.py"], capsys)
    assert rc == 0 and "fraction=<float>" in out and "amazon" in out and "Data scarcity" in out
    rc, _, err = _main(["configs", "nowhere.py"], capsys)
    assert rc == 2 and "config file not found: nowhere.py" in err


@pytest.mark.parametrize(
    "command, spec, overrides, message",
    [
        ("mdmt train", "mdmt/baseline.py:mmoe", ["stable.num_rff=5"], "stable learning is off"),
        ("mdmt train", "mdmt/saf.py", ["adatask_shared=bottom"], "adatask is off"),
        ("mergerec run", "mergerec/main.py", ["learned=", "learn.steps=3"], "no learned merges"),
        ("mergerec run", "mergerec/main.py", ["eval.groups=false", "eval.length_edges=1"], "off"),
        (
            "mdmt compare",
            "mdmt/table1.py:tiny,models=mlp",
            ["run_overrides=stable.inner_steps=2"],
            "run_overrides apply to no run",
        ),
    ],
)
def test_override_of_an_unused_field_is_an_error(capsys, command, spec, overrides, message):
    argv = [*command.split(), "--config", f"configs/{spec}", "--workdir", "w", "--check"]
    rc, _, err = _main([*argv, *(a for o in overrides for a in ("--set", o))], capsys)
    assert rc == 2 and message in err and "does not apply" in err


@pytest.mark.parametrize(
    "command, spec, overrides",
    [
        ("mdmt train", "mdmt/baseline.py:mmoe", ["stable.num_rff=5", "stable.enabled=true"]),
        ("mergerec run", "mergerec/main.py", ["learn.steps=3"]),
        ("mdmt compare", "mdmt/table1.py:tiny,models=mlp+saf", ["run_overrides=stable.num_rff=2"]),
    ],
)
def test_override_of_a_used_field_is_accepted(capsys, command, spec, overrides):
    argv = [*command.split(), "--config", f"configs/{spec}", "--workdir", "w", "--check"]
    rc, out, _ = _main([*argv, *(a for o in overrides for a in ("--set", o))], capsys)
    assert rc == 0 and "config OK" in out
