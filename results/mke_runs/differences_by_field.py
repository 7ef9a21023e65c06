"""`mkefast mke twomoon --protocol paper --differences`, one protocol run at a time, saved after each.

The same `run_protocol` calls as `mkefast.experiments.mke_paper_protocol.differences` (10 runs, T1 v0 = 2),
in the same JSON layout (`differences.fields[field].paper_protocol_without` / `our_protocol_with`), written
after every run so that a run cut short keeps what it measured. Usage:
`python results/mke_runs/differences_by_field.py results/mke_runs/twomoon_paper_differences.json`.
"""

import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import torch

from mkefast.data.twomoon import split_twomoon
from mkefast.experiments.mke_paper_protocol import OURS, PAPER, Protocol, run_protocol

torch.set_num_threads(1)
out_path = Path(sys.argv[1])
split = split_twomoon()
out = json.loads(out_path.read_text()) if out_path.exists() else {"fields": {}}
jobs = []
for f in fields(Protocol):
    paper_value, our_value = getattr(PAPER, f.name), getattr(OURS, f.name)
    other = our_value if our_value != paper_value else not paper_value
    ours_with = paper_value if our_value != paper_value else other
    jobs.append((f.name, "paper_protocol_without", replace(PAPER, **{f.name: other}), [paper_value, other]))
    jobs.append((f.name, "our_protocol_with", replace(OURS, **{f.name: ours_with}), [paper_value, other]))
# Each field from the paper's end first, the largest published effects first.
priority = ["teacher_seed", "double_softmax", "joint_input_noise", "paper_rows", "notebook_seeds", "zero_noise_draws"]
jobs.sort(key=lambda job: (job[1] != "paper_protocol_without", priority.index(job[0])))
jobs.append(("", "ours", OURS, None))
for name, side, protocol, values in jobs:
    done = out.get(side) if not name else out["fields"].get(name, {}).get(side)
    if done is not None:
        continue
    acc = run_protocol(split, protocol, runs=10)["accuracy"]
    if name:
        out["fields"].setdefault(name, {"values": values})[side] = acc
    else:
        out[side] = acc
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print(name or side, side, acc, flush=True)
