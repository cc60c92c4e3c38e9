#!/usr/bin/env python
"""Run a MergeRec experiment on CPU, GPU or TPU, one host or several.

    python scripts/run_mergerec.py --config configs/mergerec/main.py:amazon,dir=DATA \
        --workdir runs/amazon [--set learn.steps=500 ...]

On several hosts (TPU pods, multi-node GPU) launch the same command on every host with the usual
coordinator environment (JAX_COORDINATOR_ADDRESS, or JAXREC_MULTIHOST=1 where jax detects the
cluster): ``jax.distributed.initialize()`` is called before anything touches a device. Rerunning
with the same workdir resumes: finished stages are reused, interrupted training continues from its
last checkpoint.
"""

import sys

from jaxrec import sharding
from jaxrec.cli import main

if __name__ == "__main__":
    sharding.maybe_initialize_distributed()
    sys.exit(main(["mergerec", "run", *sys.argv[1:]]))
