"""The command line: help, the merge command on params files, config errors."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import checkpoint, cli


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
