"""Argument checks shared by the public ops: one place, messages that name the argument.

They run while `torch.compile` traces (also with `dynamic=True`, where Python floats arrive as
`torch.SymFloat`), so they use only comparisons, never `math.isfinite` on a possibly symbolic number.
Data-dependent checks (values inside tensors) run inside the custom op `mkefast::soft_pu_targets`.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from mkefast._build import BACKEND_NAMES

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")
RBF_SPACES = ("logit", "phi")
BACKEND_CHOICES = (*BACKEND_NAMES, "auto")

# The smallest normal float32: τ or σ below it would make 1/τ (1/σ) overflow float32 in the kernels.
MIN_SCALE = 2.0**-126


def check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def check_float_tensor(name: str, value: object) -> Tensor:
    t = check_tensor(name, value)
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float16/bfloat16/float32/float64 tensor, got {t.dtype}")
    return t


def check_integer_tensor(name: str, value: object, shape: tuple[int, ...]) -> Tensor:
    t = check_tensor(name, value)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer (int64) tensor, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {list(shape)}, got {list(t.shape)}")
    return t


def check_bool_tensor(name: str, value: object, shape: tuple[int, ...]) -> Tensor:
    t = check_tensor(name, value)
    if t.dtype != torch.bool:
        raise TypeError(f"{name}: expected a bool tensor, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {list(shape)}, got {list(t.shape)}")
    return t


def _is_real(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (numbers.Real, torch.SymFloat, torch.SymInt))


def check_positive_float(name: str, value: object, *, allow_inf: bool) -> float:
    """A float in [2⁻¹²⁶, ∞) (∞ itself only with `allow_inf`); SymFloats pass through unconverted."""
    if not _is_real(value):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    v = value if isinstance(value, (torch.SymFloat, torch.SymInt)) else float(value)  # type: ignore[arg-type]
    ok = v >= MIN_SCALE and (v < math.inf or (allow_inf and v == math.inf))
    if not ok:
        expected = f"a float >= {MIN_SCALE:.3g} or math.inf" if allow_inf else f"a finite float >= {MIN_SCALE:.3g}"
        raise ValueError(f"{name}: expected {expected} (smaller values overflow float32 as 1/{name}), "
                         f"got {value!r}")
    return v  # type: ignore[return-value]


def check_scalar(name: str, value: object) -> float | Tensor:
    """A positive scalar that may be learnable: a float (checked here) or a 0-d floating tensor (its value is
    checked in `mkefast::soft_pu_targets`, where reading it costs nothing under `torch.compile`)."""
    if isinstance(value, Tensor):
        if value.dim() != 0 or not value.dtype.is_floating_point:
            raise TypeError(f"{name}: expected a float or a 0-d floating tensor, got a {value.dtype} tensor of "
                            f"shape {list(value.shape)}")
        return value
    return check_positive_float(name, value, allow_inf=False)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {choices}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def check_backend(value: object) -> str:
    """A backend name or "auto" (whether it can run here is decided per call, by the inputs' device)."""
    return check_choice("backend", value, BACKEND_CHOICES)


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def check_same_device(**tensors: Tensor | None) -> torch.device:
    present = {k: v for k, v in tensors.items() if v is not None}
    first_name, first = next(iter(present.items()))
    for name, t in present.items():
        if t.device != first.device:
            raise ValueError(f"{name}: expected a tensor on {first.device} (like {first_name}), got {t.device}")
    return first.device
