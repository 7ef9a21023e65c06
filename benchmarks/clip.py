"""CLIP benchmark, learnable logit scale, against open_clip's dense formula (`dense_clip`).

    python benchmarks/clip.py [mkefast bench options]

The same as `mkefast bench clip`.

Default: every provider, B = 1k...8k, d = 128, fwd+bwd, rows appended to results/clip.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkefast.bench.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("clip", Path(__file__).parent / "results"))
