"""Property-based fuzzing of config loading: config-file tokens, ``--set`` overrides, typed value
parsing and the ``--check`` path of the command line.

The property: any input either loads (a config, with the value of the type the field declares)
or raises one of the documented config errors (``ValueError``, its subclasses
``UnknownNameError``/``ConfigFileError``, ``TypeError``, ``FileNotFoundError``) whose message
names the offending token, key or file; through the command line that is one line
``jaxrec: error: ...``, exit code 2, no traceback and nothing written. Any other exception (a bare
``RecursionError``, ``OSError``, ``KeyError``... from deep inside) fails the test.

40 examples per test by default (seconds); a longer search:
``JAXREC_FUZZ_EXAMPLES=2000 pytest tests/core/test_config_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxrec import cli, config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("JAXREC_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="JAXREC_FUZZ_EXAMPLES" not in os.environ,  # fixed examples in the default run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CONFIG_ERRORS = (ValueError, TypeError, FileNotFoundError)

# (command, action, spec): one small config of every kind the command line loads
SPECS = [
    ("mdmt", "train", "configs/mdmt/saf.py:tiny"),
    ("mdmt", "train", "configs/mdmt/baseline.py:mmoe,tiny"),
    ("mdmt", "compare", "configs/mdmt/table1.py:tiny,models=mlp,seeds=1"),
    ("mergerec", "run", "configs/mergerec/main.py:tiny"),
]
CONFIG_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("[!_]*.py"))

# hostile and edge-case value texts (the typed-valid ones come from each field's type)
EDGE = [
    "", " ", "0", "-1", "1", "-0.5", "1e308", "1e-400", "1e999", "nan", "inf", "-inf", "none",
    "null", "true", "False", "x", "[", "(", "]", "{", "{}", "[]", "()", "(1)", "{[1]: 2}",
    "[[1]]", "((1, 2), 3)", "1,2", "1,,2", ",", "a=b", "=", "'", '"', "\x00", "\u0661", "\uff10",
    "1_0", "0x10", "1j", "b'x'", "...", "9" * 5000, "[" * 3000, "(" * 300 + ")" * 300,
    "{" * 2000, '{"a": ' * 1500, "{'a': {'b': [1, {'c': 2}]}}", "a+b", "tiny", "mmoe", "SAF",
    "domain", "layer", "tensor", "float32", "bfloat16", "ties", "saf.py", "/", "../..", "~",
]  # fmt: skip
TEXT = (
    st.sampled_from(EDGE)
    | st.text(max_size=12)
    | st.from_regex(r"[-+.,=:()\[\]{}'\"0-9a-z_ ]{0,12}", fullmatch=True)
)
JUNK_KEYS = ["nope", "a.b", "learn.nope", "data_kwargs.path", "backbone.path", "data.paths",
             "runs.MLP.batch_size", "model_config.nope", ".", "..", "a..b", "a.", ".a", " ", "",
             "seeds.x", "learn.steps.x"]  # fmt: skip


def _field_paths(obj: Any, prefix: str = "") -> list[str]:
    """Every ``a.b.c`` key of a (nested) dataclass config, dict keys included."""
    out = []
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        out.append(key)
        if dataclasses.is_dataclass(value):
            out += _field_paths(value, key + ".")
        elif isinstance(value, dict):
            out += [f"{key}.{k}" for k in value]
    return out


_BASE = {spec: config.load_config(spec) for _, _, spec in SPECS}
_KEYS = {spec: sorted(set(_field_paths(cfg))) for spec, cfg in _BASE.items()}


def _named(message: str, names: list[str]) -> bool:
    """Whether ``message`` names one of ``names`` (a key, or any dotted part of one)."""
    parts = {p.strip() for n in names for p in [n, *n.split(".")] if p.strip()}
    return any(p in message for p in parts) or "empty name" in message or "key=value" in message


@FUZZ
@given(
    text=TEXT,
    tp=st.sampled_from(
        [
            int,
            float,
            bool,
            str,
            int | None,
            float | None,
            tuple[int, ...],
            tuple[str, ...],
            tuple[float, float],
            dict[str, Any],
            Any,
            Literal["a", "b"],
            Literal[1, 2],
            None,
        ]
    ),  # fmt: skip
)
def test_parse_value_returns_the_type_or_a_value_error(text, tp):
    tp = type(None) if tp is None else tp
    try:
        value = config.parse_value(text, tp)
    except ValueError as e:
        assert str(e)
        return
    if tp in (int, float, bool, str):
        assert type(value) is tp, (text, tp, value)
        assert value == value, text  # never NaN: it would pass every range check
    elif typing.get_origin(tp) is tuple:
        assert isinstance(value, tuple)
        args = typing.get_args(tp)
        want = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        assert len(want) == len(value) and all(type(v) is t for v, t in zip(value, want))
    elif typing.get_origin(tp) is dict:
        assert isinstance(value, dict)
    elif typing.get_origin(tp) is Literal:
        assert value in typing.get_args(tp)
    elif tp is type(None):
        assert value is None


def _override(spec: str, data) -> tuple[str, str]:
    key = data.draw(st.sampled_from(_KEYS[spec]) | st.sampled_from(JUNK_KEYS), label="key")
    value = data.draw(TEXT, label="value")
    return key, value


@FUZZ
@given(which=st.integers(0, len(SPECS) - 1), data=st.data())
def test_overrides_load_or_name_the_key(which, data):
    command, action, spec = SPECS[which]
    pairs = [_override(spec, data) for _ in range(data.draw(st.integers(1, 3), label="n"))]
    overrides = [f"{k}={v}" for k, v in pairs]
    if data.draw(st.booleans(), label="malformed"):
        overrides.append(data.draw(st.sampled_from(["x", "=1", "=", "key", " = "]), label="bad"))
    try:
        cfg = cli.load_checked(command, action, spec, overrides)
    except CONFIG_ERRORS as e:
        names = [k for k, _ in pairs] + [o.partition("=")[0] for o in overrides]
        assert _named(str(e), names) or "paths not found" in str(e), (overrides, str(e)[:500])
        return
    json.dumps(config.config_payload(cfg))  # what --check prints
    assert isinstance(cfg, type(_BASE[spec]))


def _token_arg(file: str, data) -> str:
    tokens = getattr(config.load_module(ROOT / file), "TOKENS", {})
    names = sorted(tokens) + ["nope", "", " ", "tiny=", "=tiny", "a=b=c"]
    items = []
    for _ in range(data.draw(st.integers(0, 4), label="n")):
        name = data.draw(st.sampled_from(names), label="token")
        if data.draw(st.booleans(), label="with value"):
            name += "=" + data.draw(TEXT, label="value")
        items.append(name)
    return ",".join(items)


@FUZZ
@given(file=st.sampled_from(CONFIG_FILES), data=st.data())
def test_config_tokens_load_or_name_the_token(file, data):
    arg = _token_arg(file, data)
    try:
        cfg = config.load_config(f"{ROOT / file}:{arg}")
    except CONFIG_ERRORS as e:
        # token errors name the file and list every valid token; the checks of build() and of the
        # config classes name the token or field they refuse
        assert Path(file).name in str(e) or "configs/" in str(e) or "=" in str(e), str(e)[:500]
        return
    assert dataclasses.is_dataclass(cfg)
    json.dumps(config.config_payload(cfg))


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 10))
@given(which=st.integers(0, len(SPECS) - 1), data=st.data())
def test_check_path_is_one_line_or_ok_and_writes_nothing(which, data, tmp_path_factory):
    command, action, spec = SPECS[which]
    file, _, _ = spec.partition(":")
    spec = f"{file}:{_token_arg(file, data)}" if data.draw(st.booleans(), label="tokens") else spec
    overrides = [f"{k}={v}" for k, v in [_override(SPECS[which][2], data)]]
    workdir = tmp_path_factory.mktemp("check") / "w"
    argv = [command, action, "--config", spec, "--workdir", str(workdir), "--check"]
    for item in overrides:
        argv += ["--set", item]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    out, err = out.getvalue(), err.getvalue()
    assert not workdir.exists()
    if code == 0:
        assert "config OK" in out
    else:
        assert code == 2, (argv, code, err[-2000:])
        lines = [x for x in err.splitlines() if x.strip() and not x.startswith("  ")]
        assert "Traceback" not in err and lines[0].startswith("jaxrec: error: "), err[-2000:]


BROKEN_FILES = {
    "syntax.py": ("def get_config(arg=None)\n    return 1\n", "failed to load (line 1)"),
    "raises.py": ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
    "noget.py": ("X = 1\n", "defines no get_config"),
    "keyerror.py": ("def get_config(arg=None):\n    return {}['k']\n", "KeyError"),
    "zero.py": ("def get_config(arg=None):\n    return 1 / 0\n", "ZeroDivisionError"),
    "notdc.py": ("def get_config(arg=None):\n    return 3\n", "expected a dataclass"),
    "notpy.txt": ("def get_config(arg=None):\n    return 3\n", "not a Python file"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_FILES))
def test_broken_config_files_are_one_error_naming_the_file(name, tmp_path, capsys):
    text, message = BROKEN_FILES[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CONFIG_ERRORS, match=re.escape(message)) as info:
        config.load_config(f"{path}:tiny")
    assert name in str(info.value) or message == "expected a dataclass"
    code = cli.main(
        ["mdmt", "train", "--config", str(path), "--workdir", str(tmp_path / "w"), "--check"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("jaxrec: error: ") and "Traceback" not in err, err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nowhere.py:tiny", "config file not found: nowhere.py"),
        (":tiny", "names no file"),
        ("configs:tiny", "config file not found: configs"),
    ],
)
def test_missing_config_files(spec, message):
    with pytest.raises(CONFIG_ERRORS, match=message):
        config.load_config(spec)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data_kwargs=" + "[" * 3000, "bad value for 'data_kwargs'"),  # RecursionError before
        ("data_kwargs.num_items={[1]: 2}", "bad value for 'data_kwargs.num_items'"),  # TypeError
        ("model_config.tower_dims=(1)", "bad value for 'model_config.tower_dims'"),
        ("epochs=" + "9" * 5000, "is not an integer"),
        ("a..b=1", "empty name between dots"),
        ("model_config.=1", "empty name between dots"),
        ("=1", "not of the form key=value"),
        ("learning_rate=nan", "'nan' is NaN"),  # loaded before: NaN passes every range check
    ],
)
def test_overrides_found_by_fuzzing(override, message):
    with pytest.raises(ValueError, match=message):
        config.load_config("configs/mdmt/baseline.py:mmoe,tiny", [override])


def test_path_the_os_refuses_is_a_missing_path():
    with pytest.raises(FileNotFoundError, match="paths not found: backbone.path="):
        cli.load_checked(
            "mergerec", "run", "configs/mergerec/main.py:tiny", ["backbone.path=" + "9" * 5000]
        )


OUT_OF_RANGE = [  # (spec, override, the key the error must name): each loaded before this check
    ("configs/mergerec/main.py:tiny", "learn.steps=0", "learn.steps"),
    ("configs/mergerec/main.py:tiny", "learn.kd_weight=inf", "learn.kd_weight"),
    ("configs/mergerec/main.py:tiny", "learn.lr=-0.001", "learn.lr"),
    ("configs/mergerec/main.py:tiny", "data.num_items=0", "data.num_items"),
    ("configs/mergerec/main.py:tiny", "data.num_users=-3", "data.num_users"),
    ("configs/mergerec/main.py:tiny", "eval.ks=0", "eval.ks"),
    ("configs/mergerec/main.py:tiny", "eval.ks=(10, -1)", "eval.ks"),
    ("configs/mergerec/main.py:tiny", "finetune.max_epochs=-1", "finetune.max_epochs"),
    ("configs/mergerec/main.py:tiny", "finetune.lr=0", "finetune.lr"),
    ("configs/mergerec/main.py:tiny", "finetune.patience=0", "finetune.patience"),
    ("configs/mdmt/saf.py:tiny", "max_steps=-5", "max_steps"),
    ("configs/mdmt/saf.py:tiny", "learning_rate=-1", "learning_rate"),
    ("configs/mdmt/saf.py:tiny", "eval_every=-1", "eval_every"),
    ("configs/mdmt/saf.py:tiny", "mesh_data=0", "mesh_data"),
    ("configs/mdmt/saf.py:tiny", "checkpoint_seconds=0", "checkpoint_seconds"),
]


@pytest.mark.parametrize(("spec", "override", "key"), OUT_OF_RANGE)
def test_out_of_range_values_name_the_field_value_and_range(spec, override, key):
    """Each value loaded silently before: now a ValueError naming the key, value and range."""
    with pytest.raises(ValueError, match="out of range") as err:
        config.load_config(f"{ROOT / spec}", [override])
    assert key.rsplit(".", 1)[-1] in str(err.value), str(err.value)
    assert override.split("=", 1)[1].split(",")[-1].strip(" ()") in str(err.value)
