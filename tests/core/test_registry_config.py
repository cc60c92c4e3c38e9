import dataclasses
import json
from typing import Literal

import pytest

from jaxrec import config as cfglib
from jaxrec.registry import Registry


def test_registry_register_get_and_errors():
    reg = Registry("widget")

    @reg.register("alpha")
    def alpha():
        return 1

    assert reg.get("alpha") is alpha and reg.get("ALPHA") is alpha
    assert "alpha" in reg and "beta" not in reg and len(reg) == 1
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(lambda: 2)
    with pytest.raises(KeyError, match="unknown widget 'beta'; known: alpha"):
        reg.get("beta")
    with pytest.raises(ValueError, match="lowercase"):
        reg.register("Gamma")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    lr: float = 1e-3
    dims: tuple[int, ...] = (8, 4)
    act: Literal["relu", "gelu"] = "relu"
    note: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    steps: int = 10
    use_bn: bool = True
    inner: Inner = dataclasses.field(default_factory=Inner)

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("steps must be >= 0")


def test_overrides_are_typed_by_fields():
    cfg = cfglib.apply_overrides(
        Outer(),
        [
            "steps=3",
            "use_bn=false",
            "inner.lr=0.5",
            "inner.dims=16,8,2",
            "inner.act=gelu",
            "inner.note=hello",
        ],
    )
    assert cfg == Outer(
        steps=3, use_bn=False, inner=Inner(lr=0.5, dims=(16, 8, 2), act="gelu", note="hello")
    )
    assert cfglib.apply_overrides(cfg, ["inner.note=none"]).inner.note is None
    assert cfglib.apply_overrides(cfg, ["inner.dims=(1, 2)"]).inner.dims == (1, 2)


@pytest.mark.parametrize(
    "override, error",
    [
        ("nope=1", "unknown config key 'nope'"),
        ("steps=abc", "bad value for 'steps'"),
        ("inner.act=tanh", "bad value for 'inner.act'"),
        ("steps", "not of the form"),
        ("steps=-1", "steps must be >= 0"),
        ("use_bn=maybe", "not a boolean"),
        ("inner.dims=(a=1, b=2)", "not a Python literal list/tuple"),
    ],
)
def test_bad_overrides_are_clear_errors(override, error):
    with pytest.raises((KeyError, ValueError), match=error):
        cfglib.apply_overrides(Outer(), [override])


def test_load_config_file_with_arg_and_save(tmp_path):
    file = tmp_path / "exp.py"
    file.write_text(
        "import dataclasses\n"
        "@dataclasses.dataclass(frozen=True, kw_only=True)\n"
        "class C:\n    n: int = 1\n    name: str = 'full'\n"
        "def get_config(arg):\n    return C(n=2, name='tiny') if arg == 'tiny' else C()\n"
    )
    cfg = cfglib.load_config(f"{file}:tiny", overrides=["n=5"])
    assert (cfg.n, cfg.name) == (5, "tiny")
    assert cfglib.load_config(str(file)).name == "full"
    saved = json.loads(cfglib.save_config(cfg, tmp_path / "wd").read_text())
    assert saved["config"] == {"n": 5, "name": "tiny"}
    with pytest.raises(FileNotFoundError):
        cfglib.load_config(str(tmp_path / "missing.py"))


def test_to_dict_from_dict_roundtrip():
    cfg = Outer(steps=4, inner=Inner(dims=(3,), note="x"))
    assert cfglib.from_dict(Outer, json.loads(json.dumps(cfglib.to_dict(cfg)))) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        cfglib.from_dict(Outer, {"steps": 1, "bogus": 2})
