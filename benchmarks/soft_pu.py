"""Soft-PU benchmark: `python benchmarks/soft_pu.py [mkefast bench options]`
(the same as `mkefast bench soft_pu`).

Default: every provider, B = 1k...8k, d = 128, fwd+bwd, rows appended to results/soft_pu.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkefast.bench.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("soft_pu", Path(__file__).parent / "results"))
