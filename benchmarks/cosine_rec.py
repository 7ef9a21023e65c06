"""Cosine reconstruction benchmark: `python benchmarks/cosine_rec.py [mkefast bench options]`.

Default: every provider, B = 1k...8k, d = 128, M = 2, fwd+bwd, rows appended to results/cosine_rec.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkefast.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--csv" not in args:
        args += ["--csv", str(Path(__file__).parent / "results" / "cosine_rec.csv")]
    sys.exit(main(["bench", "cosine_rec", *args]))
