#!/usr/bin/env python
"""Run a MergeRec experiment on CPU, GPU or TPU, one host or several.

    python scripts/run_mergerec.py --config configs/mergerec/main.py:amazon,dir=DATA \
        --workdir runs/amazon [--set learn.steps=500 ...]

All local devices form the mesh (``--set mesh_data=... --set mesh_model=...``). With the usual
coordinator environment (JAX_COORDINATOR_ADDRESS, or JAXREC_MULTIHOST=1 where jax detects the
cluster) ``jax.distributed.initialize()`` is called before anything touches a device; every
process runs the same stages and process 0 writes the files (README, "Multi-host", says how far
that is tested). Rerunning
with the same workdir resumes: finished stages are reused, interrupted training continues from its
last checkpoint.
"""

import sys

from jaxrec import sharding
from jaxrec.cli import main

if __name__ == "__main__":
    sharding.maybe_initialize_distributed()
    sys.exit(main(["mergerec", "run", *sys.argv[1:]]))
