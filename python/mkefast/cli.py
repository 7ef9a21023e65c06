"""The `mkefast` command line: `info`, `--version`, and the subcommands that the experiment modules register.

A user's mistake never ends in a traceback: `main()` turns the errors a user can cause into one line
`mkefast <command>: error: ...` and exit status 2, as argparse does for a bad option.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from mkefast._build import build_config, git_sha
from mkefast.backends import BackendUnavailableError

# Modules that add subcommands: each defines `add_parser(subparsers)`, which registers one subcommand
# whose parser sets `func(args) -> int`; imported when the parser is built.
_COMMAND_MODULES: tuple[str, ...] = (
    "mkefast.experiments.robult_paper", "mkefast.experiments.mke_paper", "mkefast.demo", "mkefast.bench.cli",
    "mkefast.kernels_report",
)


# Optional dependencies a command may import late: module -> (pip package, the mkefast extra that installs it).
_EXTRAS = {"sklearn": ("scikit-learn", "experiments"), "matplotlib": ("matplotlib", "experiments"),
           "triton": ("triton", "triton")}

# Errors that a user causes (a bad option value, a missing or unreadable file, a backend that cannot run here);
# anything else is a bug in mkefast and keeps its traceback.
_USER_ERRORS = (BackendUnavailableError, ValueError, TypeError, FileNotFoundError, FileExistsError,
                IsADirectoryError, NotADirectoryError, PermissionError)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The formatter of every `mkefast` command: each option's help ends with its default, and descriptions
    keep their line breaks (they hold examples).

    A required option has no default to show, and an option whose default is None says in its help what
    happens without it (`(default: no checkpoints)`) rather than "(default: None)".
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or (action.default is None and "default" in (action.help or "")):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """The parser of `mkefast` and of every subcommand (`add_subparsers` makes its parsers of the same class).

    Its help shows the defaults (`HelpFormatter`), and a mistake on the command line is one line
    `mkefast <command>: error: ...` and exit status 2, as an error while the command runs (argparse would
    print the usage first, several lines for the experiment commands; `--help` shows it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        # argparse reports options no parser knows from the top parser; name the command they were given to.
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(parsed, "command_name", self.prog)
            self.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extras)}\n")
        return parsed


def version_string() -> str:
    """`mkefast <version> (git <sha>)`, or without the sha where the build did not know it."""
    from mkefast import __version__

    sha = git_sha()
    return f"mkefast {__version__}" + (f" (git {sha})" if sha else "")


class _VersionAction(argparse.Action):
    """`--version`: computed when asked for (asking git in a source checkout costs a subprocess)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> NoReturn:
        print(version_string())
        parser.exit()


def _info(args: argparse.Namespace) -> int:
    config = build_config()
    if args.json:
        print(json.dumps(config, indent=2, default=str))
        return 0
    print(version_string())
    # The first line gave the version; the *_error keys repeat, in full, a reason listed under the backends.
    hidden = ("version", "git_sha", "why_not", "cpu_error", "cuda_error", "backends")
    shown = {k: v for k, v in config.items() if k not in hidden}
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        print(f"{key:<{width}}  {value}")
    print()
    print("available backends:", ", ".join(config["backends"]))
    for name, reason in config["why_not"].items():
        print(f"  {name}: unavailable: {reason}")
    return 0


def _leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers that run a command: those without subcommands under `parser`."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield parser
    for group in groups:
        for sub in dict.fromkeys(group.choices.values()):  # aliases map to the same parser
            yield from _leaves(sub)


def build_parser() -> Parser:
    parser = Parser(
        prog="mkefast",
        description="mkefast: fused contrastive losses and reference trainers for semi-supervised multimodal "
                    "learning (MKE, Robult). `mkefast info` says what was built and which backends run here.")
    parser.add_argument("--version", action=_VersionAction, help="print the version and git commit, then exit")
    sub = parser.add_subparsers(dest="command", required=True, help="the command to run")
    info = sub.add_parser("info", help="what was built and which backends can run here",
                          description="What was built (compiled modules, and why one is missing), and which "
                                      "backends can run in this environment.")
    info.add_argument("--json", action="store_true", help="print the build configuration as JSON")
    info.set_defaults(func=_info)
    for module in _COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    # Errors name the command as the user typed it (`mkefast robult mfeat`), as argparse's own errors do.
    for leaf in _leaves(parser):
        leaf.set_defaults(command_name=leaf.prog)
    return parser


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an error a user caused, or None for an error that is a bug (re-raised)."""
    if isinstance(exc, ModuleNotFoundError):
        top = (exc.name or "").split(".")[0]
        if top not in _EXTRAS:
            return None
        package, extra = _EXTRAS[top]
        return f"{package} is not installed and this command needs it: pip install 'mkefast[{extra}]'"
    if not isinstance(exc, _USER_ERRORS):
        return None
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one `mkefast` command; returns its exit status (2 for a user's mistake, 130 when interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{args.command_name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"{args.command_name}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
