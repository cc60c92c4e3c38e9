"""Write the Ali-CCP-layout distribution-shift benchmark (``jaxrec.data.mdmt.shift``) to a folder.

Field 216 proxies the causal user x category affinity in train and val and is random in test, so a
Table 1 run on the folder reports in-distribution (val) and out-of-distribution (test) AUC::

    python scripts/make_aliccp_shift.py data/aliccp_shift
    jaxrec mdmt compare --config "configs/mdmt/table1.py:aliccp,dir=data/aliccp_shift,tiny" \\
        --workdir runs/aliccp_shift

References: SAF (AAAI 2026); Scenario-Wise-Rec / torch-rechub Ali-CCP CSV layout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from jaxrec.data.mdmt.shift import ShiftConfig, write_aliccp_shift


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="output folder (created; its ali_ccp_*.csv are replaced)")
    for field in dataclasses.fields(ShiftConfig):
        if field.type in ("int", "float"):
            kind = int if field.type == "int" else float
            p.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=field.default)
    args = p.parse_args(argv)
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ShiftConfig)
        if hasattr(args, f.name)
    }
    info = write_aliccp_shift(args.folder, **overrides)
    print(json.dumps(info["splits"]))


if __name__ == "__main__":
    main()
