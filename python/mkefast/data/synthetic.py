"""Synthetic multi-view data whose label has known redundant, unique and synergistic parts.

The class of a sample is a string of independent fair bits of three kinds:

- redundant bits: written (with noise) into every modality, so any one modality recovers them;
- unique bits: each modality i has its own, written into modality i only;
- synergistic bits: s = b^1 ⊕ … ⊕ b^M, where the fair bit b^i is written into modality i only, so no
  strict subset of the modalities says anything about s.

Modality i sees the signs (±1) of its bits plus Gaussian noise, mixed into `features` dimensions by a
fixed random matrix. Without noise, the best accuracy with a set A of available modalities is
`synthetic_ceiling(...)`: 2^-(unique bits of the missing modalities + synergistic bits if any is missing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mkefast.data.mfeat import MultiViewData

__all__ = ["make_synthetic", "synthetic_ceiling"]


def make_synthetic(
    num_samples: int,
    *,
    num_modalities: int = 2,
    redundant_bits: int = 2,
    unique_bits: int = 1,
    synergistic_bits: int = 0,
    features: int = 32,
    noise: float = 0.6,
    seed: int = 0,
) -> MultiViewData:
    """Generates `num_samples` rows of `num_modalities` views named "m0", "m1", ….

    Class ids are the bits read as a binary number: redundant bits first (most significant), then the
    unique bits of modality 0, 1, …, then the synergistic bits; `2^(R + M·U + S)` classes in all.

    Args:
        num_samples: rows.
        num_modalities: M >= 2.
        redundant_bits, unique_bits, synergistic_bits: R, U (per modality) and S; R + M·U + S >= 1.
        features: size of each view (>= the R + U + S signals it carries).
        noise: std of the Gaussian noise added to each ±1 signal.
        seed: seed of the labels, the noise and the mixing matrices.

    Returns:
        Float32 views `[N, features]` and int64 labels `[N]`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
    if num_modalities < 2:
        raise ValueError(f"num_modalities: expected >= 2, got {num_modalities}")
    for name, value in (("redundant_bits", redundant_bits), ("unique_bits", unique_bits),
                        ("synergistic_bits", synergistic_bits)):
        if value < 0:
            raise ValueError(f"{name}: expected >= 0, got {value}")
    total_bits = redundant_bits + num_modalities * unique_bits + synergistic_bits
    if not 1 <= total_bits <= 16:
        raise ValueError(f"redundant_bits + num_modalities * unique_bits + synergistic_bits: expected 1 to 16 "
                         f"label bits, got {total_bits}")
    signals = redundant_bits + unique_bits + synergistic_bits
    if features < signals:
        raise ValueError(f"features: expected >= {signals} (the signals of one view), got {features}")
    if noise < 0:
        raise ValueError(f"noise: expected >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    n, m = num_samples, num_modalities
    redundant = rng.integers(0, 2, (n, redundant_bits))
    unique = rng.integers(0, 2, (m, n, unique_bits))
    # Per-modality shares of the synergistic bits: the first M-1 are free, the last fixes the parity.
    shares = rng.integers(0, 2, (m, n, synergistic_bits))
    synergistic = shares.sum(0) % 2
    bits = np.concatenate([redundant, *unique, synergistic], axis=1)
    labels = (bits * (1 << np.arange(total_bits - 1, -1, -1))).sum(1).astype(np.int64)
    views = {}
    for i in range(m):
        signal = 2.0 * np.concatenate([redundant, unique[i], shares[i]], axis=1) - 1.0
        signal = signal + noise * rng.standard_normal(signal.shape)
        mixing = rng.standard_normal((signals, features)) / np.sqrt(signals)
        views[f"m{i}"] = (signal @ mixing).astype(np.float32)
    return MultiViewData(views, labels)


def synthetic_ceiling(num_modalities: int, available: Sequence[int], *, unique_bits: int = 1,
                      synergistic_bits: int = 0) -> float:
    """Best accuracy (noise-free) from the modalities `available` of `make_synthetic` data, in [0, 1]."""
    present = set(available)
    if not present or not present <= set(range(num_modalities)):
        raise ValueError(f"available: expected a non-empty subset of range({num_modalities}), got {available}")
    missing = num_modalities - len(present)
    lost = missing * unique_bits + (synergistic_bits if missing else 0)
    return 2.0 ** -lost
