"""What the trainers share: seeding, devices, batches, accuracy, progress (bars on a terminal, lines in a log)
and checkpoints that cannot lie."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar, cast

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "PROGRESS_LINE_SECONDS",
    "Checkpointer",
    "Progress",
    "TensorBatches",
    "accuracy",
    "check_device",
    "describe_loader",
    "fingerprint",
    "loader_generators",
    "progress",
    "resolve_device",
    "run_identity",
    "seed_everything",
    "to_device",
]

T = TypeVar("T")

CHECKPOINT_FORMAT = "mkefast.checkpoint/1"
"""The `format` entry of every checkpoint the trainers write; a file without it is not one of ours."""


def seed_everything(seed: int) -> torch.Generator:
    """Seeds Python, NumPy and torch; returns a torch.Generator seeded the same, for explicit use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


PROGRESS_LINE_SECONDS = 10.0
"""Where nobody sees a bar (stderr is not a terminal: a log file, CI), `Progress` prints a line at least this
often while a loop runs, and one when it ends."""


def _stat(value: float | Tensor) -> str:
    return f"{float(value):.4g}"


class Progress(Generic[T]):
    """Progress of a loop where people watch it; iterate over it as over `iterable`.

    - `"bar"`: a tqdm bar on the stream (for a terminal), erased at the end unless `leave`.
    - `"lines"`: for a log file or CI, a line `mkefast: <desc>: <unit> <i>/<total>, <stats>, <seconds> s` every
      `PROGRESS_LINE_SECONDS` and one at the end of the loop (one per stage of an experiment).
    - `"off"`: nothing.

    `set_stats(loss=...)` gives the numbers to show with the count (floats, or scalar tensors that are read
    only when they are shown, so that a GPU loop is not synchronized every step).

    Args:
        iterable: what the loop iterates over.
        desc: what the loop is (e.g. `"seed 0 teacher"`).
        total: its length, when `iterable` has none (e.g. a generator).
        mode: `"bar"`, `"lines"` or `"off"` (`progress` chooses).
        unit: what one item is (`"epoch"`).
        leave: keep the bar on the terminal after the loop.
        stream: where to write (default: `sys.stderr` when the loop starts).
    """

    def __init__(self, iterable: Iterable[T], *, desc: str, total: int | None = None, mode: str = "lines",
                 unit: str = "step", leave: bool = False, stream: TextIO | None = None) -> None:
        if mode not in ("bar", "lines", "off"):
            raise ValueError(f"mode: expected 'bar', 'lines' or 'off', got {mode!r}")
        self.iterable, self.desc, self.mode, self.unit, self.leave = iterable, desc, mode, unit, leave
        self.total = total if total is not None or not isinstance(iterable, Sized) else len(iterable)
        self.stream = stream
        self.stats: dict[str, float | Tensor] = {}

    def set_stats(self, **stats: float | Tensor) -> None:
        """The numbers to show next (they replace those given before)."""
        self.stats = {k: v.detach() if isinstance(v, Tensor) else v for k, v in stats.items()}

    def _stats_text(self) -> str:
        return ", ".join(f"{k} {_stat(v)}" for k, v in self.stats.items())

    def __iter__(self) -> Iterator[T]:
        if self.mode == "off":
            yield from self.iterable
        elif self.mode == "bar":
            yield from self._bar()
        else:
            yield from self._lines()

    def _bar(self) -> Iterator[T]:
        from tqdm.auto import tqdm

        bar = tqdm(self.iterable, desc=self.desc, total=self.total, leave=self.leave, unit=self.unit,
                   dynamic_ncols=True, file=self.stream or sys.stderr)
        shown = time.monotonic()
        try:
            for item in bar:
                yield item
                if self.stats and time.monotonic() - shown >= bar.mininterval:
                    bar.set_postfix_str(self._stats_text(), refresh=False)
                    shown = time.monotonic()
        finally:
            bar.close()

    def _lines(self) -> Iterator[T]:
        stream = self.stream or sys.stderr
        start = last = time.monotonic()
        count = shown = 0

        def line() -> None:
            of = f"/{self.total}" if self.total is not None else ""
            stats = self._stats_text()
            print(f"mkefast: {self.desc}: {self.unit} {count}{of}, {stats + ', ' if stats else ''}"
                  f"{time.monotonic() - start:.1f} s", file=stream, flush=True)

        for item in self.iterable:
            yield item
            count += 1
            if time.monotonic() - last >= PROGRESS_LINE_SECONDS:
                line()
                last, shown = time.monotonic(), count
        if count != shown:
            line()


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, enabled: bool | None = None,
             leave: bool = False, unit: str = "step") -> Progress[T]:
    """The progress of a loop, shown where it will be seen: a tqdm bar when stderr is a terminal, lines
    when it is not (a log file, CI: see `Progress`), nothing when disabled.

    Args:
        iterable, desc, total, leave, unit: see `Progress`.
        enabled: True to report, False for nothing, None (the default) to report unless the environment
            sets `MKEFAST_PROGRESS=0`.
    """
    if enabled is None:
        enabled = os.environ.get("MKEFAST_PROGRESS", "1").strip() != "0"
    mode = "off" if not enabled else "bar" if sys.stderr.isatty() else "lines"
    return Progress(iterable, desc=desc, total=total, mode=mode, unit=unit, leave=leave)


def check_device(device: object) -> str | None:
    """Validates a trainer config's `device` (None, or a string torch understands, e.g. "cpu", "cuda:1").

    Raises:
        TypeError: not a string or None.
        ValueError: a string that names no device type.
    """
    if device is None:
        return None
    if not isinstance(device, str):
        raise TypeError(f"device: expected a device name such as 'cpu' or 'cuda', got {type(device).__name__}")
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"device: expected a device name such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
    return device


def resolve_device(device: str | None, model: nn.Module) -> torch.device:
    """Where to train: `device`, or where `model`'s parameters already are (the CPU for a model without any).

    Raises:
        ValueError: a CUDA device is asked for and none is visible.
    """
    if device is None:
        return next((p.device for p in model.parameters()), torch.device("cpu"))
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but no CUDA device is visible "
                         "(torch.cuda.is_available() is False)")
    return resolved


def to_device(obj: T, device: torch.device) -> T:
    """`obj` with every tensor inside (nested lists, tuples and mappings) moved to `device`."""
    moved: Any = obj
    if isinstance(obj, Tensor):
        moved = obj.to(device)
    elif isinstance(obj, Mapping):
        moved = {k: to_device(v, device) for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        moved = type(obj)(to_device(v, device) for v in obj)
    return moved


class TensorBatches:
    """Mini-batches of row indices over N in-memory rows: a new permutation every epoch (one pass).

    The permutations come from a generator of its own, seeded from torch's global RNG when the object is
    made, so that a run is reproducible from `seed_everything` and its state can be checkpointed.

    Args:
        rows: N.
        batch_size: rows per batch (at most N).
        drop_last: leave out the last incomplete batch of an epoch.
    """

    def __init__(self, rows: int, batch_size: int, *, drop_last: bool) -> None:
        if rows < 1 or batch_size < 1:
            raise ValueError(f"rows, batch_size: expected >= 1, got {rows}, {batch_size}")
        self.rows, self.batch_size, self.drop_last = rows, min(batch_size, rows), drop_last
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))

    def __iter__(self) -> Iterator[Tensor]:
        perm = torch.randperm(self.rows, generator=self.generator)
        stop = self.rows - self.batch_size + 1 if self.drop_last else self.rows
        for lo in range(0, stop, self.batch_size):
            yield perm[lo:lo + self.batch_size]


def loader_generators(loader: object) -> list[torch.Generator]:
    """The torch Generators a data loader draws its order from (its own and its sampler's), to checkpoint.

    A loader without one draws from torch's global RNG, which the checkpoints save anyway.
    """
    found: list[torch.Generator] = []
    candidates = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None),
                  getattr(getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None)]
    for g in candidates:
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def describe_loader(loader: object) -> dict[str, Any]:
    """What a checkpoint can record about a data loader without reading it: its type, size and batch size.

    Its content is not fingerprinted (that would take a pass over it), so a trainer's `checkpoint_key`
    should say which data it reads.
    """
    dataset = getattr(loader, "dataset", None)
    return {"loader": type(loader).__qualname__,
            "dataset": None if dataset is None else type(dataset).__qualname__,
            "rows": len(dataset) if isinstance(dataset, Sized) else None,
            "batch_size": getattr(loader, "batch_size", None)}


PredictionData = Any
"""What `accuracy` reads: an object with `views` and `labels` (a `MultiViewTensors`), a `(views, labels)`
pair, or an iterable of such pairs (e.g. a `DataLoader`)."""


def _pairs(data: PredictionData) -> Iterator[tuple[Any, Tensor]]:
    if hasattr(data, "views") and hasattr(data, "labels"):
        yield data.views, data.labels
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], Tensor):
        yield data[0], data[1]
    else:
        for batch in data:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError("data: expected (views, labels) batches")
            yield batch[0], batch[1]


@torch.no_grad()
def accuracy(predict: Callable[[Any], Tensor], data: PredictionData, *, device: torch.device | None = None) -> float:
    """Top-1 accuracy of `predict` on `data`, in percent (correct / rows, in float64).

    Args:
        predict: maps a batch's views to scores `[N, C]` (logits or probabilities); a module runs in eval
            mode and gets its mode back.
        data: `MultiViewTensors`, a `(views, labels)` pair or an iterable of such pairs.
        device: where the views go (default: the device of `predict`'s parameters when it is a module).
    """
    module = predict if isinstance(predict, nn.Module) else None
    if device is None and module is not None:
        device = next((p.device for p in module.parameters()), None)
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    correct = total = 0
    try:
        for views, labels in _pairs(data):
            if device is not None:
                views = to_device(views, device)
            scores = predict(views)
            correct += int((scores.argmax(dim=-1) == labels.to(scores.device)).sum())
            total += int(labels.shape[0])
    finally:
        if was_training:
            assert module is not None
            module.train()
    if total == 0:
        raise ValueError("data: expected at least one row")
    return correct / total * 100.0


def fingerprint(*tensors: Tensor | None) -> str:
    """A short SHA-256 of the tensors' shapes, dtypes and bytes (None counts as absent)."""
    digest = hashlib.sha256()
    for t in tensors:
        if t is None:
            digest.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{list(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


def _rng_state() -> dict[str, Any]:
    """Every global RNG state a training loop consumes, in a form `torch.load(weights_only=True)` reads."""
    version, key, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float],
                                               np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "python": random.getstate(),
        # weights_only=True loads no NumPy array: the generator's key travels as an int64 tensor.
        "numpy": {"name": version, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any], limit: int = 3) -> str:
    a, b = _flatten(saved), _flatten(current)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, "(absent)") != b.get(k, "(absent)")]
    parts = [f"{k} {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(parts) + more


class Checkpointer:
    """Saves and restores a training run every `every` epochs, for the configuration it was made with only.

    A checkpoint holds the model and optimizer states, the epoch, every RNG state (Python, NumPy, torch,
    CUDA and the run's own generators), what the trainer adds (e.g. its history) and `config`: everything
    that changes the result. A run resumes from it only when its own `config` is the same; otherwise it
    prints a one-line notice and starts fresh (the file is then overwritten by the new run). Files are
    read with `torch.load(weights_only=True)` and written to a temporary file first and renamed, so that a
    killed run never leaves a torn checkpoint; resuming gives the same result, bit for bit, as a run that
    was never stopped.

    Args:
        path: checkpoint file, or None to disable checkpointing.
        every: save period in epochs.
        config: what identifies the run, as JSON-serializable values (a mapping).
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, every: int = 100,
                 config: Mapping[str, Any] | None = None) -> None:
        if every < 1:
            raise ValueError(f"every: expected a period >= 1, got {every}")
        self.path = Path(path) if path is not None else None
        self.every = every
        from mkefast import __version__

        self.config: dict[str, Any] = json.loads(json.dumps({**(config or {}), "mkefast": __version__},
                                                            sort_keys=True, default=str))

    def _read(self) -> dict[str, Any]:
        assert self.path is not None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        # torch.load raises anything from EOFError to RuntimeError or UnpicklingError on a damaged file.
        except Exception as exc:
            raise ValueError(f"checkpoint {self.path}: cannot be read with weights_only=True ({type(exc).__name__}: "
                             "truncated, empty, written by an older mkefast, or not a checkpoint); delete it to "
                             "start over") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint {self.path}: not an mkefast training checkpoint (expected format "
                             f"{CHECKPOINT_FORMAT!r}); delete it or choose another path")
        missing = [k for k in ("config", "epoch", "model", "optimizer", "rng", "generators", "extra")
                   if k not in state]
        if missing:
            raise ValueError(f"checkpoint {self.path}: incomplete, missing {missing}; delete it to start over")
        return state

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                generators: Sequence[torch.Generator] = ()) -> tuple[int, dict[str, Any]]:
        """Loads the checkpoint of this configuration into `model`, `optimizer`, `generators` and the RNGs.

        Returns:
            `(epoch, extra)`: the epochs already done and what the trainer saved with them; `(0, {})` when
            there is no checkpoint or it belongs to another configuration (then a notice goes to stderr).

        Raises:
            ValueError: the file is truncated, empty, not an mkefast checkpoint, or does not fit the run.
        """
        if self.path is None or not self.path.exists():
            return 0, {}
        state = self._read()
        saved = json.loads(state["config"])
        if saved != self.config:
            print(f"mkefast: checkpoint {self.path} was made with another configuration "
                  f"({_differences(saved, self.config)}); starting fresh", file=sys.stderr)
            return 0, {}
        if len(state["generators"]) != len(generators):
            raise ValueError(f"checkpoint {self.path}: holds {len(state['generators'])} generator states, the "
                             f"run has {len(generators)}; delete it to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for generator, generator_state in zip(generators, state["generators"], strict=True):
            generator.set_state(generator_state)
        _set_rng_state(state["rng"])
        return int(state["epoch"]), dict(state["extra"])

    def maybe_save(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                   generators: Sequence[torch.Generator] = (), extra: Mapping[str, Any] | None = None, *,
                   force: bool = False) -> None:
        """Saves the run after `epoch` epochs when `epoch` is a multiple of `every` (or `force`)."""
        if self.path is None or not (force or epoch % self.every == 0):
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": json.dumps(self.config, sort_keys=True),
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": _rng_state(),
            "generators": [g.get_state() for g in generators],
            "extra": dict(extra or {}),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)


def run_identity(model: nn.Module) -> dict[str, str]:
    """What a run starts from besides its options: the model's class, architecture and initial weights,
    and the global torch RNG state (so that another seed never resumes this run's checkpoint)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(fingerprint(value).encode())
    rng = [torch.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng += torch.cuda.get_rng_state_all()
    return {
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "architecture": hashlib.sha256(repr(model).encode()).hexdigest()[:20],
        "initial_weights": digest.hexdigest()[:20],
        "rng": fingerprint(*rng),
    }
