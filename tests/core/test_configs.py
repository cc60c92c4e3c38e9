"""Every experiment config file: each declared token loads, validates and changes what it says."""

import dataclasses
from pathlib import Path

import pytest

from jaxrec import config as cfglib
from jaxrec.config import load_config, load_module
from jaxrec.mergerec import pipeline
from jaxrec.mergerec.pipeline import MergeRecConfig
from jaxrec.stable import StableConfig
from jaxrec.train.compare import CompareConfig
from jaxrec.train.mdmt import ExperimentConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FILES = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.py"))


def load(spec, overrides=()):
    return load_config(str(CONFIGS / spec), overrides)


def _tiny_training(c):
    return (c.batch_size, c.eval_batch_size, c.epochs, c.learning_rate, c.progress) == (
        256,
        1024,
        2,
        1e-2,
        False,
    ) and c.data_kwargs["num_train"] == 4096


# spec -> a check of what its tokens say (every declared token of every file appears below)
CASES = {
    "mdmt/saf.py": lambda c: (
        c.model == "saf"
        and c.stable.enabled
        and (c.stable.num_rff, c.stable.memory_momentum, c.model_config.num_experts) == (3, 0.8, 5)
        and (c.data, c.batch_size, c.learning_rate, c.seed) == ("synthetic", 2048, 1e-3, 0)
    ),
    "mdmt/saf.py:tiny": lambda c: _tiny_training(c) and c.model_config.bottom_dims == (32,),
    "mdmt/saf.py:ml1m,seed=3": lambda c: (c.data, c.data_kwargs, c.seed) == ("movielens_1m", {}, 3),
    "mdmt/saf.py:no_sl": lambda c: not c.stable.enabled and c.model_config.domain_gate,
    "mdmt/saf.py:amortized,nx=2": lambda c: (
        c.stable == StableConfig.amortized(num_rff=2) and c.model_config.domain_gate
    ),
    "mdmt/saf.py:no_fg": lambda c: c.stable.enabled and not c.model_config.domain_gate,
    "mdmt/saf.py:no_eg": lambda c: c.model_config.domain_gate and not c.model_config.expert_gate,
    "mdmt/saf.py:no_sl_fg": lambda c: (
        not (c.stable.enabled or c.model_config.domain_gate) and c.model_config.expert_gate
    ),
    "mdmt/saf.py:no_all": lambda c: (
        not (c.stable.enabled or c.model_config.domain_gate or c.model_config.expert_gate)
    ),
    "mdmt/saf.py:nx=5,alpha=0.5,k=3,adatask": lambda c: (
        (c.stable.num_rff, c.stable.memory_momentum, c.model_config.num_experts, c.adatask)
        == (5, 0.5, 3, True)
    ),
    "mdmt/saf.py:industrial": lambda c: c.stable.memory_momentum == 0.9,
    "mdmt/baseline.py:mmoe": lambda c: (
        (c.model, c.stable.enabled, c.data)
        == (
            "mmoe",
            False,
            "synthetic",
        )
    ),
    "mdmt/baseline.py:model=ple,tiny,sl,seed=2": lambda c: (
        c.model == "ple"
        and _tiny_training(c)
        and max(c.model_config.expert_dims) <= 32
        and c.stable.enabled
        and c.stable_levels == ("experts",)
        and c.seed == 2
    ),
    "mdmt/baseline.py:adatask,adatask,ml1m": lambda c: (
        (c.model, c.adatask, c.data)
        == (
            "adatask",
            True,
            "movielens_1m",
        )
    ),
    "mdmt/table1.py": lambda c: (
        c.seeds == tuple(range(5))
        and c.splits == ("test", "test_ood")
        and list(c.runs)[-1] == "SAF"
    ),
    "mdmt/table1.py:tiny,seeds=2,models=mlp+SAF,ablations=no_sl": lambda c: (
        list(c.runs) == ["MLP", "SAF", "w/o SL"]
        and c.seeds == (0, 1)
        and all(_tiny_training(r) for r in c.runs.values())
    ),
    "mdmt/table1.py:ml1m,models=mlp,ablations": lambda c: (
        len(c.runs) == 6 and c.splits == ("test",) and c.runs["MLP"].data == "movielens_1m"
    ),
    "mdmt/table1.py:aliccp,dir=x/y,models=mlp": lambda c: (
        c.runs["MLP"].data_kwargs == {"path": "x/y"} and c.runs["MLP"].data == "aliccp"
    ),
    "mdmt/table1.py:tiny,fulldata,models=mlp": lambda c: c.runs["MLP"].data_kwargs == {},
    "mergerec/main.py": lambda c: (
        c.data.source == "synthetic"
        and (c.data.num_items, c.backbone.path, c.learn.steps) == (300, "minilm", 500)
        and c.joint
        and (c.learn.dropout, c.learn.sampling, c.learn.lr) == (True, "epoch", 1e-3)
        and (c.learn_init, c.backbone.item_text) == ("paired", "reference")
    ),
    "mergerec/main.py:tiny": lambda c: (
        (c.data.num_items, c.backbone.max_user_tokens) == (60, 64)
        and (c.finetune.max_epochs, c.learn.steps) == (1, 10)
    ),
    "mergerec/main.py:amazon,dir=/d,domains=A+B,users=100,subsample=50": lambda c: (
        c.data.paths == ("/d/A.tar.gz", "/d/B.tar.gz")
        and (c.eval.max_users, c.finetune.max_eval_users, c.data.max_users) == (100, 100, 50)
    ),
    "mergerec/main.py:movielens": lambda c: (
        (c.data.source, c.data.movielens) == ("movielens", "ml-100k")
    ),
    "mergerec/main.py:ml1m": lambda c: c.data.movielens == "ml-1m",
    "mergerec/main.py:paper,bf16": lambda c: (
        (c.seeds == (0, 1, 2, 3, 4) and c.learn.steps == 500)
        and c.backbone.compute_dtype == "bfloat16"
        and (c.backbone.max_item_tokens, c.backbone.max_user_tokens) == (0, 0)  # backbone max
        and (c.finetune.batch_size, c.finetune.grad_accum, c.finetune.max_epochs) == (64, 4, 10)
    ),
    "mergerec/main.py:recformer,backbone=/ckpt/b,recformer_init": lambda c: (
        c.backbone.style == "recformer"
        and c.backbone.path == "/ckpt/b"
        and c.backbone.recformer_init
    ),
    "mergerec/main.py:cpu,amazon": lambda c: (
        c.joint
        and len(c.learned) == 4
        and (c.learn.steps, c.learn.lr, c.learn.dropout, c.learn.sampling)
        == (500, 1e-3, True, "epoch")
        and (c.learn_init, c.backbone.item_text) == ("paired", "reference")
        and (c.backbone.max_item_tokens, c.backbone.max_user_tokens) == (128, 128)
        and (c.finetune.max_epochs, c.data.max_users, c.seeds) == (2, 1000, (0, 1, 2))
    ),
    "mergerec/scarcity.py:fraction=0.01,target=Beauty": lambda c: (
        c.data.scarce == ("Beauty",) and c.data.scarce_fraction == 0.01 and not c.joint
    ),
    "mergerec/scarcity.py:amazon,dir=/d,tiny": lambda c: (
        c.data.paths[0] == "/d/Beauty.tar.gz" and c.data.scarce == ("Toys",)
    ),
    "mergerec/unseen.py:merge=Toys,domains=5,tiny": lambda c: (
        c.data.merge == ("Toys",) and c.data.num_domains == 5 and c.joint
    ),
    "mergerec/unseen.py:amazon,dir=/d,domains=A+B+C,merge=A": lambda c: (
        len(c.data.paths) == 3 and c.data.merge == ("A",)
    ),
}
KINDS = {"mdmt/saf.py": ExperimentConfig, "mdmt/baseline.py": ExperimentConfig}
KINDS |= {"mdmt/table1.py": CompareConfig} | {f: MergeRecConfig for f in FILES if "mergerec" in f}


@pytest.mark.parametrize("spec", list(CASES))
def test_config_tokens_do_what_they_say(spec):
    cfg = load(spec)
    assert isinstance(cfg, KINDS[spec.partition(":")[0]])
    assert CASES[spec](cfg), spec


@pytest.mark.parametrize("file", FILES)
def test_every_declared_token_is_tested_and_documented(file):
    tokens = load_module(CONFIGS / file).TOKENS
    assert tokens, file
    used = set()
    for spec in CASES:
        path, _, arg = spec.partition(":")
        if path == file:
            used |= set(cfglib.parse_arg(arg, tokens, where=file).given)
    # tokens a file takes over from main.py (the same Token objects) are tested there
    shared = load_module(CONFIGS / "mergerec/main.py").TOKENS
    inherited = {n for n, t in tokens.items() if file != "mergerec/main.py" and shared.get(n) is t}
    assert set(tokens) - used - inherited == set(), f"{file}: tokens without a test case"
    for name, tok in tokens.items():
        assert tok.help and "\n" not in tok.help, f"{file}: token {name} needs a one-line help"


@pytest.mark.parametrize("file", FILES)
def test_unknown_token_lists_the_valid_ones(file):
    arg = "mmoe,bogus" if file.endswith("baseline.py") else "bogus"
    with pytest.raises(ValueError, match="unknown token 'bogus'") as e:
        load(f"{file}:{arg}")
    tokens = load_module(CONFIGS / file).TOKENS
    for name, tok in tokens.items():
        assert name in str(e.value) and tok.help in str(e.value)


def test_token_order_does_not_matter():
    assert load("mdmt/saf.py:tiny,no_sl,nx=5") == load("mdmt/saf.py:nx=5,no_sl,tiny")
    a = load("mergerec/main.py:amazon,tiny,dir=/d,users=7")
    b = load("mergerec/main.py:users=7,dir=/d,tiny,amazon")
    assert a == dataclasses.replace(b, name=a.name)  # the name quotes the tokens as written


@pytest.mark.parametrize(
    "spec, error",
    [
        ("mdmt/saf.py:tiny,tiny", "given twice"),
        ("mdmt/saf.py:nx=abc", "bad value for token 'nx'"),
        ("mdmt/saf.py:nx", "needs a value"),
        ("mdmt/saf.py:industrial,alpha=0.5", "both set alpha"),
        ("mdmt/baseline.py:tiny", "needs a model first"),
        ("mdmt/baseline.py:nope", r"unknown model \['nope'\]; known: \['adasparse'"),
        ("mdmt/table1.py:ablations=no_sl+bogus", "unknown ablations"),
        ("mdmt/table1.py:dir=x", "dir= applies to aliccp only"),
        ("mdmt/table1.py:ml1m,aliccp", "choose one of ml1m and aliccp"),
        ("mergerec/main.py:dir=/d", "dir= applies to amazon only"),
        ("mergerec/main.py:amazon,movielens", "choose one data source"),
        ("mergerec/scarcity.py:fraction=2", r"fraction must be in \(0, 1\]"),
        ("mergerec/unseen.py:domains=A+B", "must be a number"),
        ("mergerec/unseen.py:merge=Toys,domains=2", r"data.merge: unknown domains \['Toys'\]"),
        ("mergerec/scarcity.py:movielens,target=Toys", r"data.scarce: unknown domains"),
    ],
)
def test_bad_tokens_are_clear_errors(spec, error):
    with pytest.raises(ValueError, match=error):
        load(spec)


def test_baseline_tiny_shares_saf_tiny_training():
    """``tiny`` settings live in saf.py once: baseline rows get exactly saf.py's training fields."""
    saf = load_module(CONFIGS / "mdmt/saf.py")
    tiny, full = load("mdmt/baseline.py:mlp,tiny"), load("mdmt/baseline.py:mlp")
    changed = {
        f.name
        for f in dataclasses.fields(tiny)
        if f.name != "model_config" and getattr(tiny, f.name) != getattr(full, f.name)
    }
    assert changed == set(saf.tiny_training())
    assert all(getattr(tiny, k) == v for k, v in saf.tiny_training().items())


def test_overrides_on_real_configs():
    cfg = load("mergerec/main.py:amazon,dir=/d,domains=A+B", ["learn.steps=7", "seeds=1,2"])
    assert cfg.data.paths == ("/d/A.tar.gz", "/d/B.tar.gz")
    assert cfg.learn.steps == 7 and cfg.seeds == (1, 2)
    # order-independent: the source and its paths are applied together
    both = ["data.source=files", "data.paths=a.tar.gz,b.tar.gz"]
    for overrides in (both, both[::-1]):
        assert load("mergerec/main.py", overrides).data.paths == ("a.tar.gz", "b.tar.gz")
    # dict-valued fields: one key, or the whole dict
    a = load("mdmt/saf.py:tiny", ["data_kwargs.num_train=128"])
    assert a.data_kwargs["num_train"] == 128 and a.data_kwargs["num_val"] == 1024
    b = load("mdmt/saf.py", ["data=aliccp", 'data_kwargs={"path": "x/y"}'])
    assert (b.data, b.data_kwargs) == ("aliccp", {"path": "x/y"})
    c = load("mdmt/saf.py", ["data_kwargs.path=x/y", "data=aliccp"])
    assert c == b


@pytest.mark.parametrize(
    "spec, overrides, error",
    [
        ("mergerec/main.py", ["data.paths=a.tar.gz"], "data.paths=.* does not apply"),
        ("mergerec/main.py:movielens", ["data.num_items=5"], "data.num_items=5 does not apply"),
        ("mergerec/main.py", ["data.movielens=ml-1m"], "does not apply to data.source='synth"),
        ("mergerec/main.py", ["merges=ties,tie"], r"merges='tie' is not valid; choose one of"),
        ("mergerec/main.py", ["learned=mergerec:layr"], "learned='mergerec:layr' is not valid"),
        ("mergerec/main.py", ["merge_hparams=ties:dens=0.1"], r"ties.*unknown.*\['dens'\]"),
        ("mergerec/main.py", ["merge_hparams=ties:density=2"], "density must be .*got 2"),
        ("mergerec/main.py", ["merges=dare", "merge_hparams=dare:key=1"], "use seed="),
        ("mergerec/main.py", ["merge_hparams=tie:density=0.1"], "merge_hparams method='tie'"),
        ("mergerec/main.py", ["merge_hparams=dare:density=0.1"], "'dare' is not in merges"),
        ("mdmt/saf.py:tiny", ["data=aliccp"], r"data_kwargs \['num_items'.* do not apply"),
        ("mdmt/saf.py", ["data=nope"], "data='nope' is not valid; choose one of"),
        ("mdmt/saf.py", ["data_kwargs.bogus=1"], r"data_kwargs \['bogus'\] do not apply"),
        ("mdmt/saf.py", ["data_kwargs=[1]"], "is not a dict"),
        ("mdmt/saf.py", ["seed=1", "seed=2"], "given twice"),
        ("mdmt/saf.py", ["learn.steps=1"], "unknown config key 'learn'"),
    ],
)
def test_bad_overrides_name_the_field(spec, overrides, error):
    with pytest.raises(ValueError, match=error):
        load(spec, overrides)


def test_mergerec_names_accepted():
    cfg = load(
        "mergerec/main.py",
        [
            "merges=dare,ties",
            "merge_hparams=dare:density=0.3",
            "learned=adamerging,mergerec:tensor",
        ],
    )
    assert cfg.merges == ("dare", "ties") and cfg.learned == ("adamerging", "mergerec:tensor")
    # --set splits at commas: "k=v" items continue the previous method
    cfg = load("mergerec/main.py", ["merges=dare", "merge_hparams=dare:seed=3,density=0.5"])
    assert pipeline.parse_hparams(cfg.merge_hparams) == {"dare": {"seed": 3, "density": 0.5}}
