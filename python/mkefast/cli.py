"""The `mkefast` command line: `info`, and the subcommands that the experiment modules register."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

# Modules that add subcommands: each defines `add_parser(subparsers)`, which registers one subcommand
# whose parser sets `func(args) -> int`. Imported lazily so that `mkefast info` stays fast.
_COMMAND_MODULES: tuple[str, ...] = (
    "mkefast.experiments.robult_paper", "mkefast.experiments.mke_paper", "mkefast.demo", "mkefast.bench.cli",
)


def _info(args: argparse.Namespace) -> int:
    from mkefast import available_backends, build_config

    config = build_config()
    if args.json:
        print(json.dumps(config, indent=2, default=str))
        return 0
    width = max(len(k) for k in config)
    for key, value in config.items():
        if key == "why_not":
            continue
        print(f"{key:<{width}}  {value}")
    print()
    print("available backends:", ", ".join(available_backends()))
    for name, reason in config["why_not"].items():
        print(f"  {name}: unavailable: {reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mkefast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="what was built and which backends can run here")
    info.add_argument("--json", action="store_true", help="print the build configuration as JSON")
    info.set_defaults(func=_info)
    for module in _COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"mkefast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
