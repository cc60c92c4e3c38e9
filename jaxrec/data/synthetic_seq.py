"""Built-in default data: seeded multi-domain sequential data with realistic item text.

No download needed; used by ``jaxrec demo`` and the tests. The generative story:

* ``num_topics`` latent interest topics (eco, luxury, sport, kids, tech, vintage, minimal, travel,
  ...) are **shared by every domain**; each owns descriptive words ("organic", "bamboo", ...) that
  appear in item titles of all domains, so text semantics transfer across domains.
* Each domain has its own vocabulary: categories (with product nouns) and brand names. An item has a
  main topic and a secondary topic; its category and brand are drawn with a preference for its
  main topic; its title is ``"<brand> <topic word> [<second-topic word>] <noun> [<detail>]"`` and
  its category is the path ``"<Domain> <Category>"`` (the processed-Amazon style).
* A user has a sparse interest mixture over topics (Dirichlet). Each next item is drawn without
  repetition from ``softmax(sharpness * interest . item_topics + popularity + sequential * [same
  category as the previous item])``, with probability ``noise`` replaced by a uniform unseen item.

A text model therefore sees real signal: the words of a user's history predict the next item's
words, within and across domains. Users and items of different domains are disjoint.

References: MergeRec (KDD 2026) data-isolated cross-domain setting (the data this imitates).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data.domain import Domain, from_sequences

TOPICS: dict[str, tuple[str, ...]] = {
    "eco": ("Organic", "Bamboo", "Recycled", "Natural", "Eco-Friendly", "Biodegradable"),
    "luxury": ("Premium", "Gold", "Silk", "Velvet", "Deluxe", "Signature"),
    "sport": ("Pro", "Rugged", "Lightweight", "Performance", "Trail", "Endurance"),
    "kids": ("Mini", "Rainbow", "Playful", "Junior", "Bubbly", "Cartoon"),
    "tech": ("Smart", "Wireless", "Digital", "USB", "Bluetooth", "Rechargeable"),
    "vintage": ("Classic", "Retro", "Antique", "Heritage", "Rustic", "Handcrafted"),
    "minimal": ("Slim", "Compact", "Matte", "Simple", "Nordic", "Clean"),
    "travel": ("Portable", "Foldable", "Travel", "Pocket", "Waterproof", "Adventure"),
}

DOMAINS: dict[str, dict[str, tuple[str, ...]]] = {
    "Beauty": {
        "Skin Care": ("Serum", "Moisturizer", "Cleanser", "Toner", "Face Mask"),
        "Makeup": ("Lipstick", "Mascara", "Eyeliner", "Foundation", "Blush"),
        "Hair Care": ("Shampoo", "Conditioner", "Hair Oil", "Hair Spray"),
        "Fragrance": ("Perfume", "Body Mist", "Cologne"),
        "Nails": ("Nail Polish", "Nail File", "Cuticle Oil"),
        "Tools": ("Makeup Brush", "Hair Dryer", "Mirror"),
    },
    "Sports": {
        "Camping": ("Tent", "Sleeping Bag", "Lantern", "Camp Stove"),
        "Cycling": ("Bike Helmet", "Bike Light", "Cycling Gloves", "Water Bottle"),
        "Fitness": ("Yoga Mat", "Dumbbell Set", "Resistance Band", "Jump Rope"),
        "Running": ("Running Shoes", "Armband", "Running Belt"),
        "Fishing": ("Fishing Rod", "Tackle Box", "Fishing Reel"),
        "Team Sports": ("Soccer Ball", "Basketball", "Shin Guards"),
    },
    "Toys": {
        "Building": ("Building Blocks", "Construction Set", "Marble Run"),
        "Puzzles": ("Jigsaw Puzzle", "Brain Teaser", "Puzzle Cube"),
        "Dolls": ("Doll", "Dollhouse", "Action Figure"),
        "Outdoor Play": ("Kite", "Water Blaster", "Scooter", "Sandbox Set"),
        "Games": ("Board Game", "Card Game", "Trivia Game"),
        "Learning": ("Science Kit", "Coding Robot", "Globe"),
    },
    "Kitchen": {
        "Cookware": ("Frying Pan", "Saucepan", "Dutch Oven", "Wok"),
        "Appliances": ("Blender", "Coffee Maker", "Toaster", "Kettle"),
        "Storage": ("Lunch Box", "Food Container", "Spice Rack"),
        "Tableware": ("Mug", "Plate Set", "Bowl", "Cutlery Set"),
        "Baking": ("Baking Sheet", "Mixing Bowl", "Rolling Pin"),
    },
    "Electronics": {
        "Audio": ("Headphones", "Speaker", "Earbuds", "Soundbar"),
        "Accessories": ("Phone Case", "Charger", "Cable", "Power Bank"),
        "Cameras": ("Action Camera", "Tripod", "Camera Bag"),
        "Computers": ("Keyboard", "Mouse", "Laptop Stand", "Monitor Light"),
        "Wearables": ("Smartwatch", "Fitness Tracker", "Watch Band"),
    },
    "Garden": {
        "Tools": ("Pruning Shears", "Garden Hose", "Rake", "Trowel"),
        "Plants": ("Seed Kit", "Planter", "Herb Garden"),
        "Outdoor Decor": ("Lantern", "Wind Chime", "Bird Feeder"),
        "Furniture": ("Garden Chair", "Hammock", "Patio Table"),
        "Watering": ("Watering Can", "Sprinkler", "Rain Barrel"),
    },
}

_DETAILS = ("", "", "Set of 2", "Set of 3", "Large", "Small", "2-Pack", "Gift Set", "XL", "Kit")
_SYLLABLES = ("lu", "mi", "ra", "ko", "ve", "sa", "ni", "to", "ba", "ze", "lo", "ri", "ka", "no")


def _brand(rng: np.random.Generator) -> str:
    parts = rng.choice(_SYLLABLES, size=rng.integers(2, 4))
    return "".join(parts).capitalize() + rng.choice(("", "", " Co.", " Labs", "ly", "ix"))


def synthetic_domains(
    num_domains: int = 3,
    num_items: int = 300,
    num_users: int = 400,
    *,
    seed: int = 0,
    num_topics: int = 8,
    brands_per_domain: int = 24,
    min_len: int = 5,
    max_len: int = 20,
    mean_extra_len: float = 5.0,
    interest_concentration: float = 0.2,
    sharpness: float = 12.0,
    popularity_exponent: float = 0.4,
    sequential: float = 1.0,
    noise: float = 0.05,
    domain_names: tuple[str, ...] | None = None,
) -> list[Domain]:
    """Generate the built-in multi-domain sequential data set (default: ~0.1 s).

    Args:
        num_domains: number of disjoint domains (at most ``len(DOMAINS)`` = 6).
        num_items: items per domain.
        num_users: users per domain.
        seed: master seed; everything is a deterministic function of the arguments.
        num_topics: shared latent topics (at most ``len(TOPICS)`` = 8), each with title words.
        brands_per_domain: brand names per domain, each with a preferred topic.
        min_len: minimum sequence length per user (>= 3: train, val and test need one item each).
        max_len: maximum sequence length per user (capped at ``num_items``).
        mean_extra_len: mean of the Poisson number of items beyond ``min_len``.
        interest_concentration: Dirichlet concentration of user interests over topics (smaller =
            more focused users = stronger signal).
        sharpness: weight of the interest-topic match in the item logits.
        popularity_exponent: Zipf exponent of the item popularity prior (0 = uniform).
        sequential: logit bonus for items of the previous item's category (short-term signal).
        noise: probability that an interaction is a uniform random unseen item.
        domain_names: which vocabularies to use (default: the first ``num_domains`` of ``DOMAINS``).

    Returns:
        ``num_domains`` :class:`~jaxrec.data.domain.Domain` objects with ``title``, ``brand`` and
        ``category`` text, named after their vocabulary.

    References: MergeRec (KDD 2026) data-isolated cross-domain setting.
    """
    names = _checked_names(num_domains, domain_names)
    _check_sizes(num_topics, min_len, max_len, num_items, num_users, noise)
    story = _Story(
        topics=tuple(TOPICS.values())[:num_topics],
        num_items=num_items,
        num_users=num_users,
        num_brands=brands_per_domain,
        min_len=min_len,
        max_len=min(max_len, num_items),
        mean_extra_len=mean_extra_len,
        concentration=interest_concentration,
        sharpness=sharpness,
        zipf=popularity_exponent,
        sequential=sequential,
        noise=noise,
    )
    return [_domain(name, np.random.default_rng((seed, k)), story) for k, name in enumerate(names)]


@dataclasses.dataclass(frozen=True)
class _Story:
    """The generative knobs shared by every domain (see :func:`synthetic_domains`)."""

    topics: tuple[tuple[str, ...], ...]  # title words of each shared topic
    num_items: int
    num_users: int
    num_brands: int
    min_len: int
    max_len: int  # capped at num_items
    mean_extra_len: float
    concentration: float  # Dirichlet concentration of user interests
    sharpness: float
    zipf: float  # popularity exponent
    sequential: float  # same-category logit bonus
    noise: float


def _checked_names(num_domains: int, domain_names: tuple[str, ...] | None) -> tuple[str, ...]:
    names = tuple(domain_names or tuple(DOMAINS)[:num_domains])
    unknown = [n for n in names if n not in DOMAINS]
    if unknown or len(names) != num_domains or len(set(names)) != len(names):
        raise ValueError(
            f"need {num_domains} distinct domain names from {tuple(DOMAINS)}, got {names}"
        )
    return names


def _check_sizes(num_topics, min_len, max_len, num_items, num_users, noise) -> None:
    if not 1 <= num_topics <= len(TOPICS):
        raise ValueError(f"num_topics must be in [1, {len(TOPICS)}], got {num_topics}")
    if min_len < 3 or max_len < min_len or num_items < min_len or num_users < 1:
        raise ValueError(
            f"need 3 <= min_len <= max_len, num_items >= min_len and num_users >= 1; got "
            f"min_len={min_len}, max_len={max_len}, num_items={num_items}, num_users={num_users}"
        )
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")


@dataclasses.dataclass(frozen=True)
class _Items:
    topic_it: np.ndarray  # [I, T] topic mixture (0.8 main, 0.2 secondary)
    cat_i: np.ndarray  # [I] category index
    text: dict[str, list[str]]  # title, brand, category per item


def _domain(name: str, rng: np.random.Generator, story: _Story) -> Domain:
    """One domain: its items, then its users' sequences (in this order from ``rng``)."""
    items = _items(name, rng, story)
    seqs = _sequences(rng, story, items, num_categories=len(DOMAINS[name]))
    prefix = name[:3].upper()
    return from_sequences(
        name,
        seqs,
        [f"{prefix}{i:05d}" for i in range(story.num_items)],
        items.text,
        [f"{prefix}-U{u:05d}" for u in range(story.num_users)],
    )


def _items(name: str, rng: np.random.Generator, story: _Story) -> _Items:
    """Item topics, category (topic-preferring), brand (topic-preferring) and title."""
    n_items, n_topics, topics = story.num_items, len(story.topics), story.topics
    categories = list(DOMAINS[name].items())
    main_i = rng.integers(0, n_topics, n_items)
    second_i = (main_i + rng.integers(1, max(n_topics, 2), n_items)) % n_topics
    topic_it = 0.8 * np.eye(n_topics)[main_i] + 0.2 * np.eye(n_topics)[second_i]
    cat_affinity_ct = rng.normal(0.0, 1.5, (len(categories), n_topics))
    cat_p_ic = _softmax(cat_affinity_ct[:, main_i].T)
    cat_i = np.array([rng.choice(len(categories), p=p) for p in cat_p_ic])
    brands = list(dict.fromkeys(_brand(rng) for _ in range(4 * story.num_brands)))
    brands = brands[: story.num_brands]
    brand_topic_b = rng.integers(0, n_topics, len(brands))
    text = {"title": [], "brand": [], "category": []}
    for i in range(n_items):
        own = np.flatnonzero(brand_topic_b == main_i[i])
        b = rng.choice(own) if own.size and rng.random() < 0.8 else rng.integers(len(brands))
        cat, nouns = categories[cat_i[i]]
        words = [brands[b], rng.choice(topics[main_i[i]])]
        if rng.random() < 0.5:
            words.append(rng.choice(topics[second_i[i]]))
        words += [rng.choice(nouns), rng.choice(_DETAILS)]
        text["title"].append(" ".join(w for w in words if w))
        text["brand"].append(brands[b])
        text["category"].append(f"{name} {cat}")
    return _Items(topic_it, cat_i, text)


def _sequences(rng, story: _Story, items: _Items, num_categories: int) -> list[np.ndarray]:
    """Users' sequences: sparse interests, popularity prior, sequential category bonus, no
    repeats; Gumbel-max sampling in float32 for speed."""
    n_users, n_items, max_len = story.num_users, story.num_items, story.max_len
    interest_ut = rng.dirichlet(np.full(len(story.topics), story.concentration), n_users)
    pop_i = np.log(1.0 / np.arange(1, n_items + 1) ** story.zipf)[rng.permutation(n_items)]
    base_ui = (story.sharpness * interest_ut @ items.topic_it.T + pop_i).astype(np.float32)
    same_cat_ci = (np.arange(num_categories)[:, None] == items.cat_i[None, :]).astype(np.float32)
    lengths_u = np.minimum(story.min_len + rng.poisson(story.mean_extra_len, n_users), max_len)
    seqs_ut = np.zeros((n_users, max_len), np.int64)
    logits_ui = base_ui.copy()
    for t in range(max_len):
        noisy_u = rng.random(n_users) < story.noise
        gumbel_ui = -np.log(-np.log(rng.random((n_users, n_items), dtype=np.float32)))
        uniform_ui = np.where(np.isfinite(logits_ui), 0.0, -np.inf).astype(np.float32)
        pick_u = np.where(noisy_u[:, None], uniform_ui, logits_ui)
        pick_u = (pick_u + gumbel_ui).argmax(axis=1)
        seqs_ut[:, t] = pick_u
        logits_ui = base_ui + story.sequential * same_cat_ci[items.cat_i[pick_u]]
        np.put_along_axis(logits_ui, seqs_ut[:, : t + 1], -np.inf, axis=1)
    return [seqs_ut[u, : lengths_u[u]] for u in range(n_users)]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
