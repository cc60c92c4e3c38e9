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

Tokens (comma-separated, any order):

- ``tiny``: CI-sized data, models and training (above);
- ``ml1m``: MovieLens-1M (M3oE protocol; no OOD split);
- ``aliccp``: the Ali-CCP CSV sample (Scenario-Wise-Rec layout) from ``dir=<folder>``
  (default ``data/aliccp_sample``, relative to the working directory); no OOD split;
- ``fulldata``: with ``tiny``, the synthetic benchmark at its default size (20k train, 5k val,
  10k test, 10k OOD test rows) instead of tiny's 4k rows;
- ``seeds=<n>``: seeds 0..n-1 (default 5);
- ``models=a+b+c``: a subset of rows, by registry name or label (e.g. ``models=mmoe+SAF``);
- ``ablations``: add SAF's ablations (paper Table 3): w/o SL, w/o FG, w/o EG, w/o SL+FG, w/o all;
  ``ablations=no_sl+no_fg`` adds a subset (``configs/mdmt/saf.py`` tokens).
"""

import dataclasses
from pathlib import Path

from jaxrec.config import load_config
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


def label_of(name: str) -> str:
    return LABELS.get(name, name)


def model_names() -> list[str]:
    """Registered models in the paper's row order; models the paper lacks come before SAF."""
    names = list(mdmt.MODELS.names())
    known = [n for n in LABELS if n in names and n != "saf"]
    extra = [n for n in names if n not in LABELS]
    return known + extra + (["saf"] if "saf" in names else [])


def get_config(arg=None):
    tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
    scale, data, folder, seeds, subset, ablations = [], None, "data/aliccp_sample", 5, None, []
    fulldata = False
    for token in tokens:
        key, _, value = token.partition("=")
        if token == "tiny":
            scale = ["tiny"]
        elif token in ("ml1m", "aliccp"):
            data = token
        elif key == "dir":
            folder = value
        elif key == "seeds":
            seeds = int(value)
        elif key == "models":
            subset = [v.strip() for v in value.split("+") if v.strip()]
        elif token == "fulldata":
            fulldata = True
        elif token == "ablations":
            ablations = list(ABLATIONS.values())
        elif key == "ablations":
            ablations = [v.strip() for v in value.split("+") if v.strip()]
            unknown = sorted(set(ablations) - set(ABLATIONS.values()))
            if unknown:
                raise ValueError(
                    f"configs/mdmt/table1.py: unknown ablations {unknown}; "
                    f"known: {list(ABLATIONS.values())}"
                )
        else:
            raise ValueError(f"configs/mdmt/table1.py: unknown token {token!r} in {arg!r}")
    if seeds < 1:
        raise ValueError(f"configs/mdmt/table1.py: seeds must be >= 1, got {seeds}")

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
    for label, token in ABLATIONS.items():
        if token in ablations:
            runs[label] = load("saf.py", [*scale, *data_tokens, token])
    if fulldata:
        if data is not None:
            raise ValueError("configs/mdmt/table1.py: fulldata applies to the synthetic data only")
        for label, cfg in runs.items():
            runs[label] = dataclasses.replace(cfg, data_kwargs={})
    if data == "aliccp":
        for label, cfg in runs.items():
            runs[label] = dataclasses.replace(cfg, data="aliccp", data_kwargs={"path": folder})
    if not runs:
        raise ValueError("configs/mdmt/table1.py: no rows selected")
    splits = ("test", "test_ood") if data is None else ("test",)
    dataset = {None: "synthetic", "ml1m": "MovieLens-1M", "aliccp": "Ali-CCP sample"}[data]
    return CompareConfig(
        name=f"Table 1 ({dataset}{', tiny' if scale else ''})",
        runs=runs,
        seeds=tuple(range(seeds)),
        splits=splits,
        reference="SAF" if "SAF" in runs else None,
        progress=not scale,
    )
