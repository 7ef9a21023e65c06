"""Smoke test of an installed mkefast (a wheel, or a build without a compiler), run by .ci/run outside the
source tree so that `import mkefast` finds the installed package.

    python smoke.py --compiled cpu+cuda   # the wheel built where g++ and nvcc are found
    python smoke.py --compiled none       # a build where CMake found no C++ compiler

Checks: the import comes from site-packages; `mkefast --version` and `mkefast info` work and agree with the
build; every backend that runs here gives the reference's soft-PU and cosine reconstruction losses and their
gradients (in float32, which every backend supports); where the C++ module was not built, `backend="cpu"`
raises BackendUnavailableError saying why and how to get it, and `backend="auto"` falls back to the
reference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

import mkefast
from mkefast.backends import BackendUnavailableError


def _run(*args: str) -> str:
    """Runs the installed console script (the one beside this interpreter, activated or not)."""
    script = Path(sys.executable).parent / "mkefast"
    out = subprocess.run([str(script), *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"`mkefast {' '.join(args)}` failed (exit {out.returncode}):\n{out.stderr}")
    return out.stdout


def _inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    b, d, m = 37, 12, 2
    fused = torch.randn(b, d, generator=g, dtype=torch.float32)
    unimodal = torch.randn(m, b, d, generator=g, dtype=torch.float32)
    labels = torch.randint(0, 4, (b,), generator=g)
    labeled = torch.rand(b, generator=g) < 0.3
    pseudo = torch.randint(-1, 4, (b,), generator=g)
    return fused, unimodal, labels, labeled, pseudo


def _losses(backend: str) -> list[torch.Tensor]:
    """Both losses and their gradients (under a random upstream gradient) for one backend."""
    fused, unimodal, labels, labeled, pseudo = _inputs()
    fused.requires_grad_()
    unimodal.requires_grad_()
    soft_pu = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, temperature=0.2, backend=backend)
    assert isinstance(soft_pu, torch.Tensor)
    rec = mkefast.cosine_reconstruction_loss(unimodal, fused.expand_as(unimodal), reduction="none", backend=backend)
    upstream = torch.randn(rec.shape, generator=torch.Generator().manual_seed(1), dtype=rec.dtype)
    (soft_pu + (rec * upstream).sum()).backward()
    assert fused.grad is not None and unimodal.grad is not None
    return [soft_pu.detach(), rec.detach(), fused.grad, unimodal.grad]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compiled", required=True, choices=("none", "cpu", "cpu+cuda"),
                        help="the compiled modules the build is expected to have made")
    args = parser.parse_args()

    package = Path(mkefast.__file__).resolve().parent
    assert "site-packages" in package.parts, f"mkefast imported from {package}, not from an installed package"
    config = mkefast.build_config()
    print(f"mkefast {config['version']} from {package}; backends: {config['backends']}")

    version = _run("--version").strip()
    assert version.startswith(f"mkefast {mkefast.__version__}"), version
    if config["git_sha"] is not None:
        assert config["git_sha"] in version, (version, config["git_sha"])
    info = json.loads(_run("info", "--json"))
    assert info["backends"] == config["backends"], (info["backends"], config["backends"])
    text = _run("info")
    print(text)

    want_cpu = args.compiled != "none"
    assert config["cpu"] == want_cpu, config["cpu_error"]
    assert config["cuda"] == (args.compiled == "cpu+cuda"), config["cuda_error"]
    if not want_cpu:
        assert "was not built: no C++ compiler found" in config["cpu_error"], config["cpu_error"]
        assert "cpu: unavailable: mkefast._C was not built" in text, text
        fused, unimodal, labels, labeled, _ = _inputs()
        try:
            mkefast.soft_pu_loss(fused, unimodal, labels, labeled, backend="cpu")
        except BackendUnavailableError as exc:
            assert "no C++ compiler found" in str(exc) and "to get it" in str(exc), str(exc)
        else:
            raise AssertionError('backend="cpu" ran although mkefast._C was not built')

    want = _losses("reference")
    for backend in [*config["backends"], "auto"]:
        got = _losses(backend)
        for name, a, b in zip(("soft_pu", "cosine_rec", "grad_fused", "grad_unimodal"), got, want, strict=True):
            # torch's float32 tolerances: this checks that each compiled or shipped kernel loads and computes the
            # loss; the tests hold the backends to their error against float64.
            if not torch.allclose(a, b, rtol=1.3e-6, atol=1e-5):
                raise AssertionError(f"{backend} {name}: max abs difference {float((a - b).abs().max()):.3g}")
        print(f"backend {backend}: soft_pu {float(got[0]):.6f} matches the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
