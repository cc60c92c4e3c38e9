"""Unseen domains (paper Table 4) and number of merged domains (Fig. 4).

``configs/mergerec/unseen.py[:merge=Beauty+Sports,domains=4,tiny]``: fine-tunes every domain (the
fine-tuned models are the normalisation reference), merges only the ``merge`` domains (pseudo-users
come from them only) and evaluates every model on every domain, so the other domains were never
seen by the merged model. Sweeping the size of ``merge`` gives Fig. 4. Every token of ``main.py``
is accepted too; ``domains`` is the number of synthetic domains, or with ``amazon`` the domain
names (``amazon,domains=Beauty+Sports+Toys+Games``).
"""

from pathlib import Path

from jaxrec.config import Token, load_module, parse_arg

HERE = Path(__file__).resolve().parent
main = load_module(HERE / "main.py")
scarcity = load_module(HERE / "scarcity.py")
TOKENS = {
    **main.TOKENS,
    "merge": Token(("Beauty", "Sports"), "the domains whose models are merged, e.g. Beauty+Sports"),
    "domains": Token(
        ("4",), "synthetic: the number of domains (default 4); amazon: the names A+B+C"
    ),
}


def get_config(arg=None):
    a = parse_arg(arg, TOKENS, where=__file__)
    num_domains = None
    if not a.amazon:
        if len(a.domains) != 1 or not a.domains[0].isdigit():
            raise ValueError(
                f"configs/mergerec/unseen.py: domains={'+'.join(a.domains)} must be a number "
                "of synthetic domains (names need amazon)"
            )
        num_domains = int(a.domains[0])
        a.given = a.given - {"domains"}
    elif "domains" not in a.given:
        a.domains = main.AMAZON_DOMAINS
    cfg = main.build(
        a, name=f"MergeRec unseen domains (merged: {', '.join(a.merge)})", num_domains=num_domains
    )
    return scarcity.scarce_settings(cfg, merge=a.merge, joint=True)
