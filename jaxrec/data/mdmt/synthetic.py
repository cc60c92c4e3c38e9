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
    rng = np.random.default_rng(cfg.seed)
    nd = len(cfg.domain_probs)
    # Ground-truth effects. Domain-specific: the weight of user/item/category effects per domain.
    user_vec = rng.normal(size=(cfg.num_users, 2)).astype(np.float32)  # (click, purchase) effects
    item_vec = rng.normal(size=(cfg.num_items, 2)).astype(np.float32)
    item_vec[:, 1] = 0.6 * item_vec[:, 0] + 0.8 * item_vec[:, 1]  # related tasks, not identical
    cat_eff = rng.normal(scale=0.7, size=(nd, cfg.num_categories, 2)).astype(np.float32)
    dom_w = rng.uniform(0.5, 1.5, size=(nd, 3, 2)).astype(np.float32)  # [d, (user,item,price), t]
    dom_bias = rng.normal(scale=0.4, size=(nd, 2)).astype(np.float32)
    item_cat = rng.integers(0, cfg.num_categories, cfg.num_items)
    item_price = rng.normal(size=cfg.num_items).astype(np.float32)
    user_pop = rng.dirichlet(np.full(cfg.num_users, 2.0))
    item_pop = rng.dirichlet(np.full(cfg.num_items, 0.7))

    def logits(user, item, domain):
        cat = item_cat[item]
        w = dom_w[domain]  # [N, 3, T]
        z = (
            w[:, 0] * user_vec[user]
            + w[:, 1] * item_vec[item]
            + cat_eff[domain, cat]
            + dom_bias[domain]
            + np.array([cfg.click_bias, cfg.purchase_bias], np.float32)
        )
        z[:, 1] -= w[:, 2, 1] * 0.5 * item_price[item]  # dearer items are bought less
        return z  # [N, 2] click logit, purchase-given-click logit

    def sample(n, s_rng):
        domain = s_rng.choice(nd, size=n, p=cfg.domain_probs).astype(np.int32)
        user = s_rng.choice(cfg.num_users, size=n, p=user_pop)
        item = s_rng.choice(cfg.num_items, size=n, p=item_pop)
        z = logits(user, item, domain)
        p_click, p_buy_given_click = _sigmoid(z[:, 0]), _sigmoid(z[:, 1])
        click = s_rng.random(n) < p_click
        buy = click & (s_rng.random(n) < p_buy_given_click)
        return dict(
            domain=domain,
            user=user,
            item=item,
            z=z,
            click=click,
            buy=buy,
            oracle=np.stack([p_click, p_click * p_buy_given_click], 1),
        )

    sizes = dict(train=cfg.num_train, val=cfg.num_val, test=cfg.num_test, test_ood=cfg.num_test_ood)
    raw = {
        name: sample(n, np.random.default_rng((cfg.seed, i + 1)))
        for i, (name, n) in enumerate(sizes.items())
    }
    qs = np.linspace(0, 1, cfg.num_buckets + 1)[1:-1]
    z_edges = np.quantile(raw["train"]["z"][:, 0], qs)
    item_edges = np.quantile(item_vec[:, 0], qs)
    splits, oracle = {}, {}
    for i, (name, r) in enumerate(raw.items()):
        s_rng = np.random.default_rng((cfg.seed, 100 + i))
        strength = cfg.ood_strength if name == "test_ood" else cfg.spurious_strength
        n = r["domain"].shape[0]
        sp_bucket = _bucketize(r["z"][:, 0], z_edges, strength, s_rng, cfg.num_buckets)
        sp_item = _bucketize(item_vec[r["item"], 0], item_edges, strength, s_rng, cfg.num_buckets)
        price = item_price[r["item"]]
        sp_dense = strength * item_vec[r["item"], 0] + np.sqrt(
            1 - strength**2 + 0.1
        ) * s_rng.normal(size=n)
        sparse = np.stack(
            [r["user"] + 1, r["item"] + 1, item_cat[r["item"]] + 1, sp_bucket, sp_item], 1
        ).astype(np.int32)
        dense = np.stack([price, sp_dense], 1).astype(np.float32)
        labels = np.stack([r["click"], r["buy"]], 1).astype(np.float32)
        splits[name] = MDMTSplit(sparse, dense, r["domain"], labels)
        oracle[name] = r["oracle"].astype(np.float32)
    schema = MDMTSchema(
        sparse_names=CAUSAL_SPARSE + SPURIOUS_SPARSE,
        sparse_vocab=(
            cfg.num_users + 1,
            cfg.num_items + 1,
            cfg.num_categories + 1,
            cfg.num_buckets + 1,
            cfg.num_buckets + 1,
        ),
        dense_names=("price", "sp_dense"),
        domain_names=tuple(f"domain_{d}" for d in range(nd)),
        task_names=("click", "purchase"),
    )
    info = dict(
        name="synthetic",
        config=dataclasses.asdict(cfg),
        causal_fields=CAUSAL_SPARSE + ("price",),
        spurious_fields=SPURIOUS_SPARSE + ("sp_dense",),
        spurious_strength={
            n: (cfg.ood_strength if n == "test_ood" else cfg.spurious_strength) for n in splits
        },
        oracle_probs=oracle,
        effects=dict(
            user=user_vec,
            item=item_vec,
            category=cat_eff,
            domain_weight=dom_w,
            domain_bias=dom_bias,
            item_category=item_cat,
            item_price=item_price,
        ),
    )
    return MDMTDataset(schema, splits, info).validate()
