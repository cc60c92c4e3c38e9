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


def test_parse_arg_big_vision_style():
    a = cfglib.parse_arg("tiny,dir=/x,users=2000", tiny=False, dir="", users=0, lr=0.5)
    assert (a.tiny, a.dir, a.users, a.lr) == (True, "/x", 2000, 0.5)
    assert type(a.users) is int and a.given == {"tiny", "dir", "users"}
    empty = cfglib.parse_arg(None, tiny=False, users=0)
    assert (empty.tiny, empty.users, empty.given) == (False, 0, frozenset())
    assert cfglib.parse_arg("tiny=false,users=3", tiny=True, users=0).tiny is False


TOKENS = {
    "tiny": cfglib.Token(False, "a small run"),
    "users": cfglib.Token(0, "users per domain"),
    "domains": cfglib.Token(("a", "b"), "domains to use", choices=("a", "b", "c")),
    "abl": cfglib.Token((), "ablations (all when bare)", bare=("x", "y")),
    "model": cfglib.Token(None, "the model", type=str, choices=("m1", "tiny"), positional=True),
}


def test_parse_arg_tokens_tuples_bare_positional():
    a = cfglib.parse_arg("m1,domains=c+a,abl", TOKENS, where="x.py")
    assert (a.model, a.domains, a.abl, a.tiny, a.users) == ("m1", ("c", "a"), ("x", "y"), False, 0)
    # a positional value that is also a flag's name goes to the positional token in first place
    b = cfglib.parse_arg("tiny,tiny", TOKENS)
    assert (b.model, b.tiny) == ("tiny", True)
    assert cfglib.parse_arg("model=m1,abl=q", TOKENS).abl == ("q",)


@pytest.mark.parametrize(
    "arg, error",
    [
        ("m1,bogus", "x.py: unknown token 'bogus' in 'm1,bogus'; valid tokens:"),
        ("m1,users", "token 'users' needs a value"),
        ("m1,users=1,users=2", "token 'users' given twice"),
        ("m1,users=many", "bad value for token 'users'"),
        ("m1,domains=a+d", r"unknown domains \['d'\]; known: \['a', 'b', 'c'\]"),
        ("m2", "unknown model"),
    ],
)
def test_parse_arg_errors_list_the_tokens(arg, error):
    with pytest.raises(ValueError, match=error) as e:
        cfglib.parse_arg(arg, TOKENS, where="x.py")
    for name, tok in TOKENS.items():
        assert name in str(e.value) and tok.help in str(e.value)


def test_describe_tokens():
    text = cfglib.describe_tokens(TOKENS).splitlines()
    assert len(text) == len(TOKENS)
    assert text[0].split() == ["tiny", "a", "small", "run"]
    assert "users=<int>" in text[1] and "domains=<a+b+..>" in text[2] and "default a+b" in text[2]
    assert "one of a, b, c" in text[2] and "(or abl)" in text[3] and "<model> first" in text[4]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source:
    kind: Literal["none", "files"] = "none"
    paths: tuple[str, ...] = ()
    kwargs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if (self.kind == "files") != bool(self.paths):
            raise ValueError(f"paths={self.paths} does not fit kind={self.kind!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WithSource:
    src: Source = dataclasses.field(default_factory=Source)
    n: int = 1


def test_overrides_are_applied_at_once():
    both = ["src.kind=files", "src.paths=a,b"]
    for overrides in (both, both[::-1]):
        assert cfglib.apply_overrides(WithSource(), overrides).src.paths == ("a", "b")
    with pytest.raises(ValueError, match="does not fit kind='none'"):
        cfglib.apply_overrides(WithSource(), ["src.paths=a"])
    with pytest.raises(ValueError, match="given twice"):
        cfglib.apply_overrides(WithSource(), ["n=1", "n=2"])
    with pytest.raises(ValueError, match="given twice"):
        cfglib.apply_overrides(WithSource(), ["src.kind=files", "src=x"])


def test_dict_field_overrides():
    cfg = WithSource(src=Source(kwargs={"a": 1, "b": {"c": 2}}))
    out = cfglib.apply_overrides(cfg, ["src.kwargs.a=0.5", "src.kwargs.b.c=x", "src.kwargs.d=[1]"])
    assert out.src.kwargs == {"a": 0.5, "b": {"c": "x"}, "d": [1]}
    assert cfglib.apply_overrides(cfg, ['src.kwargs={"z": 1}']).src.kwargs == {"z": 1}
    assert cfglib.apply_overrides(cfg, ["src.kwargs={'z': (1, 2)}"]).src.kwargs == {"z": (1, 2)}
    with pytest.raises(ValueError, match="not a dict"):
        cfglib.apply_overrides(cfg, ["src.kwargs=3"])
    with pytest.raises(ValueError, match=r"src.kwargs\['a'\] is not a dict"):
        cfglib.apply_overrides(cfg, ["src.kwargs.a.b=1"])


def test_bad_names_are_value_errors_and_key_errors():
    with pytest.raises(ValueError, match="unknown config key 'nope'") as e:
        cfglib.apply_overrides(Outer(), ["nope=1"])
    assert isinstance(e.value, KeyError) and str(e.value).startswith("unknown config key")
    with pytest.raises(ValueError, match=r"pick=3 is not valid; choose one of \[1, 2\]"):
        cfglib.check_choice("pick", 3, [1, 2])


def test_accepted_kwargs():
    def plain(path=None, *, seed=0):
        pass

    def with_config(cfg: Inner | None = None, **overrides):
        pass

    def anything(**kw):
        pass

    assert cfglib.accepted_kwargs(plain) == {"path", "seed"}
    assert cfglib.accepted_kwargs(with_config) == {"cfg", "lr", "dims", "act", "note"}
    assert cfglib.accepted_kwargs(anything) is None


def test_check_kind():
    cfglib.check_kind(Outer(), Outer, spec="f.py", command="cmd")
    with pytest.raises(ValueError, match="cmd expects a config of class Inner, but f.py gives"):
        cfglib.check_kind(Outer(), Inner, spec="f.py", command="cmd")
