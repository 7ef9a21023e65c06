"""Griffe extension for the documentation site: Google-style "Args:" entries that document several parameters
at once (`lr, weight_decay: AdamW settings.`, a style the mkefast docstrings use) become one entry per
parameter with the shared description, so that griffe checks every name against the signature (and the
strict build fails on a misspelt one) instead of warning about an unknown parameter `lr, weight_decay`.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

_SECTION = re.compile(r"(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters):")
_GROUPED = re.compile(r"(?P<names>[A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)+)(?P<type>\s*\([^)]*\))?:(?P<rest>.*)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def split_grouped_args(text: str) -> str:
    """`text` with every grouped parameter entry of its parameter sections split into one entry per name."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if not _SECTION.fullmatch(line.strip()):
            continue
        header = _indent(line)
        entry_indent: int | None = None
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > header):
            entry = lines[i]
            i += 1
            if not entry.strip():
                out.append(entry)
                continue
            entry_indent = _indent(entry) if entry_indent is None else entry_indent
            match = _GROUPED.fullmatch(entry.strip()) if _indent(entry) == entry_indent else None
            if match is None:
                out.append(entry)
                continue
            continuation = []
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) > entry_indent:
                continuation.append(lines[i])
                i += 1
            for name in re.split(r"\s*,\s*", match["names"]):
                out.append(f"{' ' * entry_indent}{name}{match['type'] or ''}:{match['rest']}")
                out.extend(continuation)
    return "\n".join(out)


class GroupedArgs(griffe.Extension):
    """Splits grouped parameter entries before griffe parses a docstring."""

    def on_instance(self, *, node: ast.AST | griffe.ObjectNode, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = split_grouped_args(obj.docstring.value)
