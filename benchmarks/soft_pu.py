"""Soft-PU benchmark: `python benchmarks/soft_pu.py [mkefast bench options]` (same as `mkefast bench soft_pu`).

Default: every provider, B = 1k...8k, d = 128, M = 2, fwd+bwd, rows appended to results/soft_pu.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkefast.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--csv" not in args:
        args += ["--csv", str(Path(__file__).parent / "results" / "soft_pu.csv")]
    sys.exit(main(["bench", "soft_pu", *args]))
