"""Raw Tianchi Ali-CCP files -> memory-mapped columnar store (AITM's 18-field layout).

Streams ``sample_skeleton_{train,test}.csv`` + ``common_features_{train,test}.csv`` in bounded
memory; the library code is ``jaxrec.data.mdmt.aliccp.preprocess_raw``. Load the result with
``jaxrec.data.mdmt.load("aliccp_aitm", path=OUT_DIR)``.

Example::

    python scripts/preprocess_aliccp.py --raw-dir ~/data/aliccp --out-dir ~/data/aliccp_store
"""

from __future__ import annotations

import argparse
import logging

from jaxrec.data.mdmt.aliccp import AITM_FIELDS, preprocess_raw


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw-dir", required=True, help="folder with the four raw csv files")
    parser.add_argument("--out-dir", required=True, help="store folder to write")
    parser.add_argument("--fields", default=",".join(AITM_FIELDS), help="comma-separated fields")
    parser.add_argument("--min-count", type=int, default=10, help="keep ids seen > this often")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--chunk-rows", type=int, default=1 << 16)
    parser.add_argument("--keep-domain-field", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ds = preprocess_raw(
        args.raw_dir,
        args.out_dir,
        fields=tuple(f.strip() for f in args.fields.split(",") if f.strip()),
        min_count=args.min_count,
        val_fraction=args.val_fraction,
        seed=args.seed,
        keep_domain_field=args.keep_domain_field,
        chunk_rows=args.chunk_rows,
        show_progress=not args.quiet,
    )
    sizes = {k: len(v) for k, v in ds.splits.items()}
    logging.info(
        "wrote %s: %s, vocab %s",
        args.out_dir,
        sizes,
        dict(zip(ds.schema.sparse_names, ds.schema.sparse_vocab)),
    )


if __name__ == "__main__":
    main()
