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
    names = tuple(domain_names or tuple(DOMAINS)[:num_domains])
    unknown = [n for n in names if n not in DOMAINS]
    if unknown or len(names) != num_domains or len(set(names)) != len(names):
        raise ValueError(
            f"need {num_domains} distinct domain names from {tuple(DOMAINS)}, got {names}"
        )
    if not 1 <= num_topics <= len(TOPICS):
        raise ValueError(f"num_topics must be in [1, {len(TOPICS)}], got {num_topics}")
    if min_len < 3 or max_len < min_len or num_items < min_len or num_users < 1:
        raise ValueError(
            f"need 3 <= min_len <= max_len, num_items >= min_len and num_users >= 1; got "
            f"min_len={min_len}, max_len={max_len}, num_items={num_items}, num_users={num_users}"
        )
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    topics = list(TOPICS.values())[:num_topics]
    return [
        _domain(
            name,
            np.random.default_rng((seed, k)),
            topics,
            num_items,
            num_users,
            brands_per_domain,
            min_len,
            min(max_len, num_items),
            mean_extra_len,
            interest_concentration,
            sharpness,
            popularity_exponent,
            sequential,
            noise,
        )
        for k, name in enumerate(names)
    ]


def _domain(
    name, rng, topics, n_items, n_users, n_brands, min_len, max_len, mean_extra, conc, sharp, zipf,
    seq_bonus, noise,
) -> Domain:  # fmt: skip
    n_topics = len(topics)
    categories = list(DOMAINS[name].items())
    # items: topics, category (topic-preferring), brand (topic-preferring), title
    main_i = rng.integers(0, n_topics, n_items)
    second_i = (main_i + rng.integers(1, max(n_topics, 2), n_items)) % n_topics
    topic_it = 0.8 * np.eye(n_topics)[main_i] + 0.2 * np.eye(n_topics)[second_i]
    cat_affinity_ct = rng.normal(0.0, 1.5, (len(categories), n_topics))
    cat_p_ic = _softmax(cat_affinity_ct[:, main_i].T)
    cat_i = np.array([rng.choice(len(categories), p=p) for p in cat_p_ic])
    brands = list(dict.fromkeys(_brand(rng) for _ in range(4 * n_brands)))[:n_brands]
    brand_topic_b = rng.integers(0, n_topics, len(brands))
    titles, brand_names, cat_names = [], [], []
    for i in range(n_items):
        own = np.flatnonzero(brand_topic_b == main_i[i])
        b = rng.choice(own) if own.size and rng.random() < 0.8 else rng.integers(len(brands))
        cat, nouns = categories[cat_i[i]]
        words = [brands[b], rng.choice(topics[main_i[i]])]
        if rng.random() < 0.5:
            words.append(rng.choice(topics[second_i[i]]))
        words += [rng.choice(nouns), rng.choice(_DETAILS)]
        titles.append(" ".join(w for w in words if w))
        brand_names.append(brands[b])
        cat_names.append(f"{name} {cat}")
    # users: sparse interests, popularity prior, sequential category bonus, no repeats
    interest_ut = rng.dirichlet(np.full(n_topics, conc), n_users)
    pop_i = np.log(1.0 / np.arange(1, n_items + 1) ** zipf)[rng.permutation(n_items)]
    base_ui = (sharp * interest_ut @ topic_it.T + pop_i).astype(np.float32)
    same_cat_ci = (np.arange(len(categories))[:, None] == cat_i[None, :]).astype(np.float32)
    lengths_u = np.minimum(min_len + rng.poisson(mean_extra, n_users), max_len)
    seqs_ut = np.zeros((n_users, max_len), np.int64)
    logits_ui = base_ui.copy()
    for t in range(max_len):  # Gumbel-max sampling, float32 for speed
        noisy_u = rng.random(n_users) < noise
        gumbel_ui = -np.log(-np.log(rng.random((n_users, n_items), dtype=np.float32)))
        uniform_ui = np.where(np.isfinite(logits_ui), 0.0, -np.inf).astype(np.float32)
        pick_u = np.where(noisy_u[:, None], uniform_ui, logits_ui)
        pick_u = (pick_u + gumbel_ui).argmax(axis=1)
        seqs_ut[:, t] = pick_u
        logits_ui = base_ui + seq_bonus * same_cat_ci[cat_i[pick_u]]
        np.put_along_axis(logits_ui, seqs_ut[:, : t + 1], -np.inf, axis=1)
    seqs = [seqs_ut[u, : lengths_u[u]] for u in range(n_users)]
    prefix = name[:3].upper()
    return from_sequences(
        name,
        seqs,
        [f"{prefix}{i:05d}" for i in range(n_items)],
        {"title": titles, "brand": brand_names, "category": cat_names},
        [f"{prefix}-U{u:05d}" for u in range(n_users)],
    )


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
