"""A distribution-shift benchmark written in the Ali-CCP CSV layout (read by ``load_aliccp``).

The labels depend on a *causal interaction*: each (user, category) cell has a latent affinity
``a[u, c] = p_u . q_c / sqrt(r)`` (rank r = 4, unit variance); click and purchase logits are
domain-specific functions of it plus an item effect. One low-cardinality field, ``216``, is a
*proxy* of that interaction: in ``train`` and ``val`` it holds the affinity's decile with
probability ``proxy_strength`` (else a random decile); in ``test`` it is always random. Learning
the interaction from the user and category ids takes the embeddings (7.5 training rows per (user,
category) cell); reading field 216 is easy and right in train and val, and worthless in test. So
``val`` measures in-distribution and ``test`` out-of-distribution accuracy, and the gap between
them is how much a model leans on the proxy. Measured with the defaults (``table1.py:aliccp,tiny``,
batch 1024, 3 epochs): an MLP reaches 0.81 mean AUC on val and 0.51 on test (3 seeds); trained on
the same data with field 216 random everywhere (``proxy_strength=0``) it reaches 0.70 / 0.65 (2
seeds), the accuracy the causal fields alone give.

Layout: ``ali_ccp_{train,val,test}.csv`` with ``click,purchase``, the 23 sparse fields of
:data:`~jaxrec.data.mdmt.aliccp.RECHUB_SPARSE` and the 8 dense fields of
:data:`~jaxrec.data.mdmt.aliccp.RECHUB_DENSE`, exactly as the Scenario-Wise-Rec sample:

- ``101`` user id, ``121``-``129`` user profile fields (functions of the user), ``205`` item id,
  ``206`` item category, ``207``/``210`` item attributes (functions of the item), ``216`` the proxy,
  ``301`` the domain (1, 2, 3 with Ali-CCP's sizes: 38% / 0.8% / 61% of rows);
- the other sparse fields are noise ids; the dense fields are per-user / per-item values in [0, 1]
  (min-max scaled, as in the release), ``D508``-``D853`` noise.

Every quantity derives from ``seed``; the ground truth (affinities, field roles, strengths) is
written to ``shift_info.json`` beside the CSVs.

References: SAF (Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation, AAAI 2026);
Ali-CCP (ESMM, SIGIR 2018) and the Scenario-Wise-Rec / torch-rechub CSV layout; StableNet (CVPR
2021) for the causal/spurious set-up.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from jaxrec.checkpoint import atomic_path, atomic_write
from jaxrec.data.mdmt.aliccp import RECHUB_DENSE, RECHUB_SPARSE

__all__ = ["ShiftConfig", "write_aliccp_shift"]

PROXY_FIELD = "216"
USER_FIELD, ITEM_FIELD, CATEGORY_FIELD, DOMAIN_FIELD = "101", "205", "206", "301"
USER_PROFILE = ("121", "122", "124", "125", "126", "127", "128", "129")
ITEM_ATTRS = ("207", "210")
ALICCP_DOMAIN_SHARES = (0.378, 0.0075, 0.6145)  # ~32.2M / 0.64M / 52.4M rows in Ali-CCP


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShiftConfig:
    seed: int = 0
    num_train: int = 60_000
    num_val: int = 20_000
    num_test: int = 20_000
    num_users: int = 500
    num_items: int = 4_000
    num_categories: int = 16
    affinity_rank: int = 4  # a[u, c] = p_u . q_c / sqrt(rank): learnable from the id embeddings
    num_buckets: int = 10  # the proxy's values: deciles of the affinity
    proxy_strength: float = 0.9  # P(field 216 = the affinity's decile) in train and val
    domain_shares: tuple[float, float, float] = ALICCP_DOMAIN_SHARES
    affinity_scale: tuple[float, float, float] = (1.6, 1.2, 2.0)  # per domain, click logit
    click_bias: tuple[float, float, float] = (-1.4, -1.0, -1.8)
    purchase_scale: float = 1.2  # purchase logit (given click) per unit of affinity
    purchase_bias: float = -1.2

    def __post_init__(self):
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("ShiftConfig: every split needs at least one row")
        if min(self.num_users, self.num_items, self.num_categories, self.num_buckets) < 2:
            raise ValueError("ShiftConfig: users, items, categories and buckets must be >= 2")
        if self.affinity_rank < 1:
            raise ValueError(f"affinity_rank must be >= 1, got {self.affinity_rank}")
        if not 0.0 <= self.proxy_strength <= 1.0:
            raise ValueError(f"proxy_strength must lie in [0, 1], got {self.proxy_strength}")
        shares = self.domain_shares
        if len(shares) != 3 or min(shares) <= 0 or abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"domain_shares must be 3 positive shares summing to 1, got {shares}")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _world(cfg: ShiftConfig, rng: np.random.Generator) -> dict:
    """The fixed ground truth shared by every split."""
    u, i, c = cfg.num_users, cfg.num_items, cfg.num_categories
    p_ur = rng.normal(size=(u, cfg.affinity_rank))
    q_cr = rng.normal(size=(c, cfg.affinity_rank))
    affinity = p_ur @ q_cr.T / np.sqrt(cfg.affinity_rank)  # unit variance, low rank: learnable
    edges = np.quantile(affinity, np.linspace(0, 1, cfg.num_buckets + 1)[1:-1])
    return {
        "affinity": affinity,
        "decile_edges": edges,
        "item_category": rng.integers(0, c, size=i),
        "item_effect": 0.5 * rng.normal(size=i),
        "user_profile": rng.integers(0, 8, size=(u, len(USER_PROFILE))),
        "item_attrs": rng.integers(0, 30, size=(i, len(ITEM_ATTRS))),
        "user_dense": rng.uniform(size=(u, 4)),
    }


def _split(cfg: ShiftConfig, world: dict, n: int, proxy_strength: float, rng) -> np.ndarray:
    """One split's rows as a float array in the CSV's column order."""
    user = rng.integers(0, cfg.num_users, size=n)
    item = rng.integers(0, cfg.num_items, size=n)
    cat = world["item_category"][item]
    domain = rng.choice(3, size=n, p=np.asarray(cfg.domain_shares))
    aff = world["affinity"][user, cat]
    scale = np.asarray(cfg.affinity_scale)[domain]
    click_p = _sigmoid(
        np.asarray(cfg.click_bias)[domain] + scale * aff + world["item_effect"][item]
    )
    click = rng.uniform(size=n) < click_p
    buy_p = _sigmoid(cfg.purchase_bias + cfg.purchase_scale * aff)
    purchase = click & (rng.uniform(size=n) < buy_p)
    decile = np.searchsorted(world["decile_edges"], aff)
    follow = rng.uniform(size=n) < proxy_strength
    proxy = np.where(follow, decile, rng.integers(0, cfg.num_buckets, size=n))

    sparse = {name: rng.integers(0, 5, size=n) for name in RECHUB_SPARSE}  # noise ids
    sparse[USER_FIELD], sparse[ITEM_FIELD], sparse[CATEGORY_FIELD] = user, item, cat
    sparse[PROXY_FIELD] = proxy
    sparse[DOMAIN_FIELD] = domain + 1
    for j, name in enumerate(USER_PROFILE):
        sparse[name] = world["user_profile"][user, j]
    for j, name in enumerate(ITEM_ATTRS):
        sparse[name] = world["item_attrs"][item, j]
    dense = {name: rng.uniform(size=n).round(4) for name in RECHUB_DENSE}
    for j, name in enumerate(RECHUB_DENSE[:4]):  # D109_14 .. D150_14: per-user values
        dense[name] = world["user_dense"][user, j].round(4)
    cols = [click, purchase, *(sparse[f] for f in RECHUB_SPARSE), *(dense[f] for f in RECHUB_DENSE)]
    return np.stack([np.asarray(v, np.float64) for v in cols], axis=1)


def write_aliccp_shift(
    folder: str | os.PathLike, config: ShiftConfig | None = None, **overrides
) -> dict:
    """Write the shift benchmark's three CSVs (and ``shift_info.json``) into ``folder``.

    Args:
        folder: created if missing; existing ``ali_ccp_*.csv`` files there are replaced.
        config: a :class:`ShiftConfig` (default: ``ShiftConfig(**overrides)``).

    Returns:
        The info dict written to ``shift_info.json``: the config, row and label counts per split
        and domain, and the field roles.
    """
    cfg = dataclasses.replace(config or ShiftConfig(), **overrides)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    world = _world(cfg, rng)
    header = ",".join(("click", "purchase", *RECHUB_SPARSE, *RECHUB_DENSE))
    fmt = ["%d"] * (2 + len(RECHUB_SPARSE)) + ["%.4f"] * len(RECHUB_DENSE)
    info = {
        "config": dataclasses.asdict(cfg),
        "proxy_field": PROXY_FIELD,
        "causal_fields": [USER_FIELD, CATEGORY_FIELD, ITEM_FIELD],
        "in_distribution_split": "val",
        "out_of_distribution_split": "test",
        "splits": {},
    }
    plan = (
        ("train", cfg.num_train, cfg.proxy_strength),
        ("val", cfg.num_val, cfg.proxy_strength),
        ("test", cfg.num_test, 0.0),
    )
    for split, n, strength in plan:
        rows = _split(cfg, world, n, strength, rng)
        with atomic_path(folder / f"ali_ccp_{split}.csv") as tmp:  # never half a file
            np.savetxt(tmp, rows, fmt=fmt, delimiter=",", header=header, comments="")
        dom = rows[:, 2 + RECHUB_SPARSE.index(DOMAIN_FIELD)].astype(int) - 1
        info["splits"][split] = {
            "rows": n,
            "proxy_strength": strength,
            "rows_per_domain": np.bincount(dom, minlength=3).tolist(),
            "click_rate": round(float(rows[:, 0].mean()), 4),
            "purchase_rate": round(float(rows[:, 1].mean()), 4),
        }
    atomic_write(folder / "shift_info.json", json.dumps(info, indent=1) + "\n")
    return info
