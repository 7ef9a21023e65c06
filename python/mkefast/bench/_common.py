"""Pieces shared by the per-op benchmark modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mkefast._build import BACKEND_NAMES
from mkefast.backends import BackendUnavailableError, resolve_backend


def backend_providers(op: str, device: str, dtype: torch.dtype = torch.float32) -> list[str]:
    """The backends that can run `op` on `device` here, then `reference_compiled` (torch.compile)."""
    names = []
    for name in BACKEND_NAMES:
        try:
            resolve_backend(name, op, torch.device(device), dtype)
        except BackendUnavailableError:
            continue
        names.append(name)
    return [*names, "reference_compiled"]


def itemsize(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


def mode_callables(mode: str, loss: Callable[[], torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> Any:
    """What `OpSpec.step` returns for `mode`: one timed callable for "fwd" and "fwd+bwd", and for "bwd" an
    untimed `setup` (a fresh forward) with the timed backward of its loss. `inputs` get their grads cleared."""

    def clear() -> None:
        for t in inputs:
            t.grad = None

    if mode == "fwd":
        def fwd() -> None:
            with torch.no_grad():
                loss()
        return fwd
    if mode == "fwd+bwd":
        def fwd_bwd() -> None:
            clear()
            loss().backward()
        return fwd_bwd

    state: dict[str, torch.Tensor] = {}

    def setup() -> None:
        clear()
        state["loss"] = loss()

    def bwd() -> None:
        state.pop("loss").backward()

    return setup, bwd
