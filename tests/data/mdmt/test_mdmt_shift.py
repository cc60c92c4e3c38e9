"""Tests for the Ali-CCP-layout shift benchmark generator (jaxrec.data.mdmt.shift)."""

import json

import numpy as np
import pytest

from jaxrec.data import mdmt
from jaxrec.data.mdmt import shift
from jaxrec.data.mdmt.aliccp import RECHUB_SPARSE
from jaxrec.data.mdmt.shift import ShiftConfig, write_aliccp_shift

SMALL = dict(num_train=6000, num_val=3000, num_test=3000, num_users=300, num_categories=12)


def _click_rate_by_proxy(split, schema):
    j = schema.sparse_names.index("216")
    proxy = np.asarray(split.sparse)[:, j] - 1  # the reader shifts ids by +1
    click = np.asarray(split.labels)[:, 0]
    return np.array([click[proxy == b].mean() for b in range(10)])


def test_reads_through_the_aliccp_reader_with_the_planted_shift(tmp_path):
    info = write_aliccp_shift(tmp_path, seed=3, **SMALL)
    ds = mdmt.load("aliccp", path=tmp_path)
    assert [len(ds[s]) for s in ("train", "val", "test")] == [6000, 3000, 3000]
    assert ds.schema.sparse_names == tuple(f for f in RECHUB_SPARSE if f != "301")
    for split in ("train", "val", "test"):
        counts = np.bincount(np.asarray(ds[split].domain), minlength=3)
        assert counts.tolist() == info["splits"][split]["rows_per_domain"]
        assert counts[1] < 0.03 * counts.sum() < counts[0] < counts[2]  # Ali-CCP's shares
        labels = np.asarray(ds[split].labels)
        assert np.all(labels[:, 1] <= labels[:, 0])  # purchase only after a click
    # field 216 follows the affinity in train and val (click rate rises across its deciles) and
    # is random in test
    for split in ("train", "val"):
        rate = _click_rate_by_proxy(ds[split], ds.schema)
        low, mid, high = rate[:3].mean(), rate[3:7].mean(), rate[7:].mean()
        assert rate[-1] - rate[0] > 0.4 and low + 0.05 < mid < high - 0.1
    test_rate = _click_rate_by_proxy(ds["test"], ds.schema)
    assert test_rate.max() - test_rate.min() < 0.12
    # the causal fields carry the signal in every split, test included: the user x category
    # affinity (recomputed from the seed) orders the click rates
    cfg = ShiftConfig(seed=3, **SMALL)
    affinity = shift._world(cfg, np.random.default_rng(3))["affinity"]
    names = ds.schema.sparse_names
    for split in ("train", "test"):
        sp = np.asarray(ds[split].sparse) - 1
        aff = affinity[sp[:, names.index("101")], sp[:, names.index("206")]]
        click = np.asarray(ds[split].labels)[:, 0]
        lo, hi = np.quantile(aff, [0.2, 0.8])
        assert click[aff > hi].mean() - click[aff < lo].mean() > 0.35
    meta = json.loads((tmp_path / "shift_info.json").read_text())
    assert meta["proxy_field"] == "216" and meta["out_of_distribution_split"] == "test"
    assert meta["splits"]["test"]["proxy_strength"] == 0.0


def test_seeded_and_atomic(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_aliccp_shift(a, seed=1, num_train=200, num_val=50, num_test=50)
    write_aliccp_shift(b, ShiftConfig(seed=1, num_train=200, num_val=50, num_test=50))
    write_aliccp_shift(c, seed=2, num_train=200, num_val=50, num_test=50)
    for split in ("train", "val", "test"):
        name = f"ali_ccp_{split}.csv"
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    assert not list(a.glob("*.tmp"))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(num_val=0), "at least one row"),
        (dict(proxy_strength=1.5), "proxy_strength"),
        (dict(domain_shares=(0.5, 0.5, 0.5)), "domain_shares"),
        (dict(affinity_rank=0), "affinity_rank"),
        (dict(num_categories=1), ">= 2"),
    ],
)
def test_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        ShiftConfig(**bad)
