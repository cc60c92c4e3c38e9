"""The SAF paper's Table 1 (all registered MDMT models x seeds): ``table1.py[:tokens]``.

Run with ``jaxrec mdmt compare --config configs/mdmt/table1.py:tiny --workdir W``. Rows are all
models in ``jaxrec.models.mdmt.MODELS`` (a newly registered model appears automatically; rows in
the paper's order, unknown names before SAF), each with its defaults at the paper's settings
(embedding dim 16, Adam 1e-3, batch 2048, early stopping on mean validation AUC, patience 2):
SAF with stable learning (n_x 3, alpha 0.8, K 5), the baselines without it.

The settings live in one place each: SAF's (and its ablations') in ``configs/mdmt/saf.py``,
the baselines' in ``configs/mdmt/baseline.py``, the CI-sized data and training of ``tiny`` in
``saf.py:tiny``; this file loads those files by path (library code never imports ``configs/``)
and only picks rows, seeds, data and sizes. ``tiny`` gives every row the training fields that
``saf.py:tiny`` changes (data sizes, batch, epochs, learning rate) and caps every size field of
the model's config at 32 (``jaxrec.train.compare.small_model_config``, lengths kept), so a newly
registered model is small without naming its fields here; SAF and its ablations keep
``saf.py:tiny``'s own sizes.

Tokens (any order) are listed by ``jaxrec configs configs/mdmt/table1.py`` (``TOKENS`` below).
"""

import dataclasses
from pathlib import Path

from jaxrec.config import Token, load_config, parse_arg
from jaxrec.models import mdmt
from jaxrec.train.compare import CompareConfig

HERE = Path(__file__).resolve().parent
LABELS = {  # registry name -> the paper's row label, in the paper's row order
    "mlp": "MLP",
    "shared_bottom": "SharedBottom",
    "mmoe": "MMoE",
    "ple": "PLE",
    "star": "STAR",
    "adasparse": "AdaSparse",
    "adatask": "AdaTask",
    "hamur": "HAMUR",
    "pepnet": "PEPNet",
    "m2m": "M2M",
    "m3oe": "M3oE",
    "saf": "SAF",
}
ABLATIONS = {  # label -> configs/mdmt/saf.py token
    "w/o SL": "no_sl",
    "w/o FG": "no_fg",
    "w/o EG": "no_eg",
    "w/o SL+FG": "no_sl_fg",
    "w/o all": "no_all",
}
OTHER_SAF = {"SAF (amortized)": "amortized"}  # rows added only by name: ablations=amortized


def label_of(name: str) -> str:
    return LABELS.get(name, name)


def model_names() -> list[str]:
    """Registered models in the paper's row order; models the paper lacks come before SAF."""
    names = list(mdmt.MODELS.names())
    known = [n for n in LABELS if n in names and n != "saf"]
    extra = [n for n in names if n not in LABELS]
    return known + extra + (["saf"] if "saf" in names else [])


TOKENS = {
    "tiny": Token(False, "CI-sized data, models and training (saf.py's tiny_training)"),
    "ml1m": Token(False, "MovieLens-1M (M3oE protocol; no OOD split)"),
    "aliccp": Token(False, "the Ali-CCP CSV sample (Scenario-Wise-Rec layout) from dir="),
    "dir": Token("data/aliccp_sample", "aliccp: the folder of the sample (relative to the cwd)"),
    "fulldata": Token(False, "with tiny: the synthetic benchmark at its default size"),
    "seeds": Token(5, "seeds 0..n-1"),
    "models": Token((), "a subset of rows by registry name or label (e.g. mmoe+SAF)"),
    "ablations": Token(
        (),
        "add SAF's ablations (paper Table 3), all or a subset (e.g. no_sl+no_fg); amortized "
        "adds SAF with StableConfig.amortized() weights",
        choices=(*ABLATIONS.values(), *OTHER_SAF.values()),
        bare=tuple(ABLATIONS.values()),
    ),
}


def get_config(arg=None):
    a = parse_arg(arg, TOKENS, where=__file__)
    if a.ml1m and a.aliccp:
        raise ValueError("configs/mdmt/table1.py: choose one of ml1m and aliccp")
    if "dir" in a.given and not a.aliccp:
        raise ValueError("configs/mdmt/table1.py: dir= applies to aliccp only")
    if a.fulldata and (a.ml1m or a.aliccp):
        raise ValueError("configs/mdmt/table1.py: fulldata applies to the synthetic data only")
    if a.seeds < 1:
        raise ValueError(f"configs/mdmt/table1.py: seeds must be >= 1, got {a.seeds}")
    data = "ml1m" if a.ml1m else "aliccp" if a.aliccp else None
    scale = ["tiny"] if a.tiny else []
    subset = list(a.models) if a.models else None
    ablations = list(a.ablations)

    names = model_names()
    if subset is not None:
        lookup = {n: n for n in names} | {label_of(n).lower(): n for n in names}
        unknown = [s for s in subset if s.lower() not in lookup]
        if unknown:
            raise ValueError(
                f"configs/mdmt/table1.py: models={unknown} are not registered; known: "
                f"{[f'{n} ({label_of(n)})' for n in names]}"
            )
        wanted = {lookup[s.lower()] for s in subset}
        names = [n for n in names if n in wanted]

    data_tokens = ["ml1m"] if data == "ml1m" else []

    def load(file, tokens):
        return load_config(f"{HERE / file}:{','.join(tokens)}")

    runs = {}
    for name in names:
        file, first = ("saf.py", []) if name == "saf" else ("baseline.py", [name])
        runs[label_of(name)] = load(file, first + scale + data_tokens)
    for label, token in (ABLATIONS | OTHER_SAF).items():
        if token in ablations:
            runs[label] = load("saf.py", [*scale, *data_tokens, token])
    if a.fulldata:
        for label, cfg in runs.items():
            runs[label] = dataclasses.replace(cfg, data_kwargs={})
    if data == "aliccp":
        for label, cfg in runs.items():
            runs[label] = dataclasses.replace(cfg, data="aliccp", data_kwargs={"path": a.dir})
    if not runs:
        raise ValueError("configs/mdmt/table1.py: no rows selected")
    # aliccp: val too (for the shift benchmark of jaxrec.data.mdmt.shift, val is in-distribution
    # and test out-of-distribution)
    splits = {None: ("test", "test_ood"), "ml1m": ("test",), "aliccp": ("val", "test")}[data]
    dataset = {None: "synthetic", "ml1m": "MovieLens-1M", "aliccp": "Ali-CCP sample"}[data]
    # stable learning's own effect: each SAF row against its w/o SL ablation, seeds paired
    contrasts = tuple(
        (label, "w/o SL") for label in ("SAF", *OTHER_SAF) if label in runs and "w/o SL" in runs
    )
    return CompareConfig(
        name=f"Table 1 ({dataset}{', tiny' if scale else ''})",
        runs=runs,
        contrasts=contrasts,
        seeds=tuple(range(a.seeds)),
        splits=splits,
        reference="SAF" if "SAF" in runs else None,
        progress=not scale,
    )
