"""The papers' experiments, apart from the methods: protocols, tables, plots and the command line.

- `mke_paper`: MKE's TwoMoon reproduction (Table 2, Figure 3) and UCI mfeat (`mkefast mke ...`).
- `robult_paper`: Robult against supervised baselines and its ablations, with views missing at test time
  (`mkefast robult ...`).

The methods they run (models, losses, trainers) are in `mkefast.models` and `mkefast.train`; the public
namespaces `mkefast.mke` and `mkefast.robult` gather both.
"""
