"""Benchmarks of the mkefast ops: a shared runner (`runner`), one module per op, and the `mkefast bench` CLI."""
