"""Every experiment config file loads for each documented variant and overrides apply."""

from pathlib import Path

import pytest

from jaxrec.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

SPECS = [
    "mergerec/main.py",
    "mergerec/main.py:tiny",
    "mergerec/main.py:amazon,dir=d,users=100",
    "mergerec/main.py:movielens",
    "mergerec/main.py:paper,bf16",
    "mergerec/main.py:recformer",
    "mergerec/scarcity.py:fraction=0.01,target=Beauty",
    "mergerec/unseen.py:merge=Toys,tiny",
    "mdmt/saf.py",
    "mdmt/saf.py:tiny",
    "mdmt/saf.py:tiny,no_sl",
    "mdmt/baseline.py:mmoe,tiny",
]


@pytest.mark.parametrize("spec", SPECS)
def test_config_loads(spec):
    cfg = load_config(str(CONFIGS / spec))
    assert cfg is not None


def test_amazon_paths_and_overrides():
    cfg = load_config(
        str(CONFIGS / "mergerec/main.py:amazon,dir=/d,domains=A+B"), ["learn.steps=7", "seeds=1,2"]
    )
    assert cfg.data.paths == ("/d/A.tar.gz", "/d/B.tar.gz")
    assert cfg.learn.steps == 7 and cfg.seeds == (1, 2)
    with pytest.raises(ValueError, match="unknown token"):
        load_config(str(CONFIGS / "mergerec/main.py:bogus"))
