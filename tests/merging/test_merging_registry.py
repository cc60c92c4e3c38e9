"""The merge-method registry: hyper-parameter specs agree with the functions; describe()."""

import inspect
import json

import pytest

from jaxrec import merging
from jaxrec.merging.registry import HParam


@pytest.mark.parametrize("name", merging.METHODS.names())
def test_specs_agree_with_function_signatures(name):
    spec = merging.METHODS.get(name)
    params = inspect.signature(spec.fn).parameters
    kw = {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert ("key" in kw) == spec.needs_key
    kw.pop("key", None)
    declared = {h.name: h.default for h in spec.hparams if h.name != "seed"}
    assert declared == kw, f"{name}: registry {declared} vs signature {kw}"
    for h in spec.hparams:
        assert h.check(h.default), f"{name}.{h.name} default {h.default!r} not allowed"
        assert h.help
    assert spec.paper and spec.url.startswith("https://arxiv.org/abs/")
    assert spec.summary and "\n" not in spec.summary


def test_describe_lists_every_method_as_plain_data():
    out = merging.describe()
    assert [d["name"] for d in out] == list(merging.METHODS.names())
    json.dumps(out)  # plain data only
    ties = {d["name"]: d for d in out}["ties"]
    hp = {h["name"]: h for h in ties["hparams"]}
    assert hp["density"] == {
        "name": "density",
        "type": "float",
        "default": 0.2,
        "range": "(0, 1]",
        "help": "fraction of entries kept per task",
    }
    assert hp["granularity"]["choices"] == ["model", "tensor"]
    assert ties["paper"]["url"] == "https://arxiv.org/abs/2306.01708"
    assert not ties["needs_key"]
    dare = merging.describe("dare")
    assert len(dare) == 1 and dare[0]["needs_key"]
    assert "seed" in [h["name"] for h in dare[0]["hparams"]]
    with pytest.raises(ValueError, match="unknown merge method 'tie'; known: .*ties"):
        merging.describe("tie")


def test_hparam_check_bounds_and_types():
    d = HParam("density", 0.2, "h", low=0.0, high=1.0, low_open=True)
    assert d.allowed() == "a number in (0, 1]"
    assert d.check(1) and d.check(1.0) and d.check(1e-9)
    for bad in (0.0, 1.0000001, float("nan"), float("inf"), True, "0.5", None):
        assert not d.check(bad), bad
    k = HParam("k", 2, "h", kind=int, low=0)
    assert k.allowed() == "an int in [0, inf)"
    assert k.check(0) and not k.check(2.0) and not k.check(-1) and not k.check(False)
    s = HParam("scale", 1.0, "h")
    assert s.allowed() == "a finite number" and s.check(-3) and not s.check(float("nan"))
    c = HParam("g", "a", "h", kind=str, choices=("a", "b"))
    assert c.check("b") and not c.check("c") and not c.check(1)


def test_public_namespace_is_small():
    assert sorted(merging.__all__) == [
        "METHODS",
        "combine",
        "describe",
        "group_names",
        "layer_groups",
        "merge",
        "stack",
        "task_vector",
        "ties_task_vectors",
    ]
    with pytest.warns(DeprecationWarning, match="merging.tree.leaf_paths"):
        assert merging.leaf_paths is merging.tree.leaf_paths
    with pytest.raises(AttributeError, match="no_such_name"):
        merging.no_such_name  # noqa: B018
