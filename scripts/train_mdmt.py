"""Train one MDMT model (thin wrapper over ``jaxrec.train.mdmt.run``; multi-host ready).

Usage::

    python scripts/train_mdmt.py --config configs/mdmt/saf.py:tiny --workdir runs/saf_tiny \
        --set epochs=3 --set model_config.num_experts=4

On a multi-host launch (JAX_COORDINATOR_ADDRESS set, or JAXREC_MULTIHOST=1) it first calls
``jax.distributed.initialize()``; everything else is the same code path as one host.
"""

import argparse
import json
import logging

from jaxrec import sharding
from jaxrec.config import load_config


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="configs/mdmt/<file>.py[:arg]")
    p.add_argument("--workdir", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    sharding.maybe_initialize_distributed()
    from jaxrec.train import mdmt

    result = mdmt.run(load_config(args.config, args.overrides), args.workdir)
    summary = {k: v["mean_auc"] for k, v in result["splits"].items()}
    print(json.dumps({"workdir": args.workdir, "mean_auc": summary}))


if __name__ == "__main__":
    main()
