"""SupCon benchmark, single view, against pytorch-metric-learning (`pml`).

    python benchmarks/supcon.py [mkefast bench options]

The same as `mkefast bench supcon`.

Default: every provider, B = 1k...8k, d = 128, fwd+bwd, rows appended to results/supcon.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkefast.bench.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("supcon", Path(__file__).parent / "results"))
