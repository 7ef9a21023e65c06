"""Cosine reconstruction benchmark: `python benchmarks/cosine_rec.py [mkefast bench options]`
(the same as `mkefast bench cosine_rec`).

Default: every provider, B = 1k...8k, d = 128, fwd+bwd, rows appended to results/cosine_rec.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkefast.bench.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("cosine_rec", Path(__file__).parent / "results"))
