"""A seeded synthetic MDMT benchmark with known causal and spurious fields.

The labels depend only on *causal* fields (user, item, category, price), with domain- and
task-specific effects; purchase is only possible after a click. *Spurious* fields are noisy
functions of the causal ones: in training (and the i.i.d. val/test splits) they reveal the
quantile of the true click logit (``sp_bucket``) or of the item's click effect (``sp_item``,
``sp_dense``), so they predict the labels only through the causal fields. In the ``test_ood``
split that relation is changed (by default reversed), so a model that leans on the spurious
fields, which are low-cardinality and therefore much easier to learn than the user/item ids,
visibly loses out-of-distribution AUC. Ground truth (field roles, effects, oracle
probabilities) is recorded in ``dataset.info``.

References: SAF (Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation,
AAAI 2026), Sec. "stable learning"; StableNet (Deep Stable Learning for OOD Generalization,
CVPR 2021) for the causal/spurious set-up.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data.mdmt.schema import MDMTDataset, MDMTSchema, MDMTSplit

__all__ = ["SyntheticConfig", "make_synthetic"]

CAUSAL_SPARSE = ("user", "item", "category")
SPURIOUS_SPARSE = ("sp_bucket", "sp_item")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    seed: int = 0  # all randomness (effects and samples) derives from it
    num_train: int = 20_000  # rows per split
    num_val: int = 5_000
    num_test: int = 10_000
    num_test_ood: int = 10_000
    domain_probs: tuple[float, ...] = (0.38, 0.01, 0.61)  # imbalanced, tiny middle domain
    num_users: int = 1_000  # causal, high cardinality: hard to learn from few rows per id
    num_items: int = 2_000
    num_categories: int = 20
    num_buckets: int = 10  # spurious, low cardinality: easy to learn
    spurious_strength: float = 0.8  # P(spurious field follows the causal signal) in train/val/test
    ood_strength: float = -0.8  # same in test_ood; negative = reversed relation, 0 = independent
    click_bias: float = -1.0  # base logits (domain offsets are added)
    purchase_bias: float = -2.0

    def __post_init__(self):
        if abs(sum(self.domain_probs) - 1.0) > 1e-6 or min(self.domain_probs) <= 0:
            raise ValueError(f"domain_probs must be positive and sum to 1, got {self.domain_probs}")
        for name in ("spurious_strength", "ood_strength"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [-1, 1], got {getattr(self, name)}")
        if min(self.num_train, self.num_val, self.num_test, self.num_test_ood) < 1:
            raise ValueError("every split needs at least one row")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _bucketize(values, edges, strength, rng, num_buckets):
    """Ids 1..num_buckets: the quantile bucket of ``values`` with prob |strength| (reversed if
    strength < 0), else uniform noise."""
    b = np.searchsorted(edges, values)  # 0..num_buckets-1
    if strength < 0:
        b = num_buckets - 1 - b
    noise = rng.random(values.shape[0]) >= abs(strength)
    b = np.where(noise, rng.integers(0, num_buckets, values.shape[0]), b)
    return (b + 1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class _Effects:
    """The ground-truth effect tables (what ``info["effects"]`` reports)."""

    user_u2: np.ndarray  # [U, 2] (click, purchase) effect per user
    item_i2: np.ndarray  # [I, 2] per item (related tasks, not identical)
    cat_dc2: np.ndarray  # [D, C, 2] per (domain, category)
    dom_w_d32: np.ndarray  # [D, (user, item, price), 2] domain weights of the effects
    dom_bias_d2: np.ndarray  # [D, 2]
    item_cat_i: np.ndarray  # [I] category of each item
    item_price_i: np.ndarray  # [I]
    user_pop_u: np.ndarray  # [U] sampling probabilities
    item_pop_i: np.ndarray  # [I]

    def as_info(self) -> dict[str, np.ndarray]:
        return dict(
            user=self.user_u2,
            item=self.item_i2,
            category=self.cat_dc2,
            domain_weight=self.dom_w_d32,
            domain_bias=self.dom_bias_d2,
            item_category=self.item_cat_i,
            item_price=self.item_price_i,
        )


def make_synthetic(cfg: SyntheticConfig | None = None, **overrides) -> MDMTDataset:
    """Generates the synthetic MDMT benchmark.

    Args:
        cfg: the generator config (defaults if None).
        **overrides: fields of :class:`SyntheticConfig` to replace.

    Returns:
        An :class:`MDMTDataset` with splits ``train``, ``val``, ``test`` (i.i.d.) and ``test_ood``
        (spurious relation changed); ``info`` holds the ground truth: ``causal_fields``,
        ``spurious_fields``, per-split ``oracle_probs`` [N, T] (true P(click), P(purchase)),
        the effect tables and the config.
    """
    cfg = dataclasses.replace(cfg or SyntheticConfig(), **overrides)
    eff = _draw_effects(cfg, np.random.default_rng(cfg.seed))
    sizes = dict(train=cfg.num_train, val=cfg.num_val, test=cfg.num_test, test_ood=cfg.num_test_ood)
    raw = {
        name: _sample_rows(cfg, eff, n, np.random.default_rng((cfg.seed, i + 1)))
        for i, (name, n) in enumerate(sizes.items())
    }
    qs = np.linspace(0, 1, cfg.num_buckets + 1)[1:-1]
    edges = (np.quantile(raw["train"]["z"][:, 0], qs), np.quantile(eff.item_i2[:, 0], qs))
    splits = {
        name: _observe(cfg, eff, r, edges, _strength(cfg, name), (cfg.seed, 100 + i))
        for i, (name, r) in enumerate(raw.items())
    }
    oracle = {name: r["oracle"].astype(np.float32) for name, r in raw.items()}
    return MDMTDataset(_schema(cfg), splits, _info(cfg, eff, oracle)).validate()


def _strength(cfg: SyntheticConfig, split: str) -> float:
    return cfg.ood_strength if split == "test_ood" else cfg.spurious_strength


def _draw_effects(cfg: SyntheticConfig, rng: np.random.Generator) -> _Effects:
    """Ground-truth effects; domain-specific: the weight of user/item/price effects per domain."""
    nd = len(cfg.domain_probs)
    user_u2 = rng.normal(size=(cfg.num_users, 2)).astype(np.float32)
    item_i2 = rng.normal(size=(cfg.num_items, 2)).astype(np.float32)
    item_i2[:, 1] = 0.6 * item_i2[:, 0] + 0.8 * item_i2[:, 1]  # related tasks, not identical
    return _Effects(
        user_u2=user_u2,
        item_i2=item_i2,
        cat_dc2=rng.normal(scale=0.7, size=(nd, cfg.num_categories, 2)).astype(np.float32),
        dom_w_d32=rng.uniform(0.5, 1.5, size=(nd, 3, 2)).astype(np.float32),
        dom_bias_d2=rng.normal(scale=0.4, size=(nd, 2)).astype(np.float32),
        item_cat_i=rng.integers(0, cfg.num_categories, cfg.num_items),
        item_price_i=rng.normal(size=cfg.num_items).astype(np.float32),
        user_pop_u=rng.dirichlet(np.full(cfg.num_users, 2.0)),
        item_pop_i=rng.dirichlet(np.full(cfg.num_items, 0.7)),
    )


def _true_logits(cfg, eff: _Effects, user_n, item_n, domain_n) -> np.ndarray:
    """[N, 2] click logit and purchase-given-click logit."""
    w_n32 = eff.dom_w_d32[domain_n]
    z_n2 = (
        w_n32[:, 0] * eff.user_u2[user_n]
        + w_n32[:, 1] * eff.item_i2[item_n]
        + eff.cat_dc2[domain_n, eff.item_cat_i[item_n]]
        + eff.dom_bias_d2[domain_n]
        + np.array([cfg.click_bias, cfg.purchase_bias], np.float32)
    )
    z_n2[:, 1] -= w_n32[:, 2, 1] * 0.5 * eff.item_price_i[item_n]  # dearer items: bought less
    return z_n2


def _sample_rows(cfg, eff: _Effects, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Causal fields, logits, labels and oracle probabilities of ``n`` rows of one split."""
    domain = rng.choice(len(cfg.domain_probs), size=n, p=cfg.domain_probs).astype(np.int32)
    user = rng.choice(cfg.num_users, size=n, p=eff.user_pop_u)
    item = rng.choice(cfg.num_items, size=n, p=eff.item_pop_i)
    z = _true_logits(cfg, eff, user, item, domain)
    p_click, p_buy_given_click = _sigmoid(z[:, 0]), _sigmoid(z[:, 1])
    click = rng.random(n) < p_click
    buy = click & (rng.random(n) < p_buy_given_click)
    oracle = np.stack([p_click, p_click * p_buy_given_click], 1)
    return dict(domain=domain, user=user, item=item, z=z, click=click, buy=buy, oracle=oracle)


def _observe(cfg, eff: _Effects, r, edges, strength: float, seed) -> MDMTSplit:
    """One split's observed fields: the causal ids and the spurious fields at ``strength``."""
    rng = np.random.default_rng(seed)
    z_edges, item_edges = edges
    item_eff_n = eff.item_i2[r["item"], 0]
    sp_bucket = _bucketize(r["z"][:, 0], z_edges, strength, rng, cfg.num_buckets)
    sp_item = _bucketize(item_eff_n, item_edges, strength, rng, cfg.num_buckets)
    noise_n = rng.normal(size=r["domain"].shape[0])
    sp_dense = strength * item_eff_n + np.sqrt(1 - strength**2 + 0.1) * noise_n
    ids = (r["user"] + 1, r["item"] + 1, eff.item_cat_i[r["item"]] + 1, sp_bucket, sp_item)
    sparse = np.stack(ids, 1).astype(np.int32)
    dense = np.stack([eff.item_price_i[r["item"]], sp_dense], 1).astype(np.float32)
    labels = np.stack([r["click"], r["buy"]], 1).astype(np.float32)
    return MDMTSplit(sparse, dense, r["domain"], labels)


def _schema(cfg: SyntheticConfig) -> MDMTSchema:
    vocab = (cfg.num_users, cfg.num_items, cfg.num_categories, cfg.num_buckets, cfg.num_buckets)
    return MDMTSchema(
        sparse_names=CAUSAL_SPARSE + SPURIOUS_SPARSE,
        sparse_vocab=tuple(v + 1 for v in vocab),  # id 0 = padding
        dense_names=("price", "sp_dense"),
        domain_names=tuple(f"domain_{d}" for d in range(len(cfg.domain_probs))),
        task_names=("click", "purchase"),
    )


def _info(cfg: SyntheticConfig, eff: _Effects, oracle: dict[str, np.ndarray]) -> dict:
    return dict(
        name="synthetic",
        config=dataclasses.asdict(cfg),
        causal_fields=CAUSAL_SPARSE + ("price",),
        spurious_fields=SPURIOUS_SPARSE + ("sp_dense",),
        spurious_strength={name: _strength(cfg, name) for name in oracle},
        oracle_probs=oracle,
        effects=eff.as_info(),
    )
