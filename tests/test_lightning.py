"""The Lightning modules fit with `lightning.Trainer` on the CPU, and the Lightning example runs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

lightning = pytest.importorskip("lightning")

from mkefast.lightning import MKEStudentModule, RobultModule  # noqa: E402
from mkefast.models.mke_classifier import MKEClassifier, Perturbation  # noqa: E402
from mkefast.models.robult_model import Robult  # noqa: E402
from mkefast.train.common import seed_everything  # noqa: E402
from mkefast.train.mke_trainer import TrainConfig, train_classifier  # noqa: E402
from mkefast.train.robult_trainer import RobultConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class _Rows(Dataset):  # type: ignore[type-arg]
    def __init__(self, *columns: object) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns[-1])  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[object, ...]:
        return tuple({k: v[i] for k, v in c.items()} if isinstance(c, dict) else c[i]  # type: ignore[index]
                     for c in self.columns)


def _data(n: int = 96) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=gen)
    signal = torch.nn.functional.one_hot(y, 3).float()
    return {"a": torch.cat([signal, torch.randn(n, 2, generator=gen)], 1) + 0.3 * torch.randn(n, 5, generator=gen),
            "b": torch.randn(n, 4, generator=gen) + signal[:, :1]}, y


def _fit(module: lightning.LightningModule, train: DataLoader, val: DataLoader, root: Path) -> list[dict[str, str]]:  # type: ignore[type-arg]
    logger = lightning.pytorch.loggers.CSVLogger(root, name="test")
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                                log_every_n_steps=1)
    trainer.fit(module, train, val)
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_robult_module_fits_two_epochs_and_every_loss_term_is_logged(tmp_path: Path) -> None:
    views, y = _data()
    labeled = torch.arange(len(y)) % 3 == 0
    seed_everything(0)
    model = Robult([5, 4], 3, hidden_size=16, shared_size=8, unique_size=8, encoder_hidden=(16,), head_hidden=(16,),
                   modality_names=["a", "b"])
    module = RobultModule(model, RobultConfig(backend="reference", lr=1e-2))
    train = DataLoader(_Rows(views, y, labeled), batch_size=16, shuffle=True)
    rows = _fit(module, train, DataLoader(_Rows(views, y), batch_size=48), tmp_path)
    epochs = [r for r in rows if r.get("train/total")]
    assert len(epochs) == 2
    for key in ("sup", "pu_lb", "pu_ulb", "rec", "total"):
        assert f"train/{key}" in epochs[0]
    for key in ("sup", "rec", "total"):
        assert float(epochs[1][f"train/{key}"]) < float(epochs[0][f"train/{key}"]), key
    assert any(r.get("val/acc") for r in rows)
    with pytest.raises(ValueError, match="bin_edges"):
        RobultModule(Robult([5, 4], 1, task="regression"))


def test_mke_student_module_fits_two_epochs_on_a_teachers_labels(tmp_path: Path) -> None:
    views, y = _data()
    seed_everything(0)
    teacher = MKEClassifier({"a": 5}, [16], 3)
    train_classifier(teacher, {"a": views["a"][:24]}, y[:24], config=TrainConfig(epochs=60, lr=0.05, optimizer="adam"),
                     show_progress=False)
    student = MKEClassifier({"a": 5, "b": 4}, [16], 3, perturbation=Perturbation(input_noise=0.5))
    module = MKEStudentModule(student, TrainConfig(epochs=2, lr=0.02, optimizer="adam"), teacher=teacher,
                              threshold=0.4)
    rows = _fit(module, DataLoader(_Rows(views), batch_size=16, shuffle=True),
                DataLoader(_Rows(views, y), batch_size=48), tmp_path)
    epochs = [r for r in rows if r.get("train/loss")]
    assert len(epochs) == 2 and float(epochs[1]["train/loss"]) < float(epochs[0]["train/loss"])
    assert 0 < float(epochs[0]["train/kept"]) <= 1
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="teacher"):
        MKEStudentModule(student, TrainConfig(epochs=1), teacher=teacher, targets=y)


@pytest.mark.slow
def test_lightning_example_logs_and_checkpoints(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    example = Path(__file__).resolve().parents[1] / "examples" / "lightning_robult.py"
    proc = subprocess.run([sys.executable, str(example), "--epochs", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "load with weights_only=True" in proc.stdout and "test accuracy %: full" in proc.stdout
    assert list(tmp_path.glob("robult/version_0/metrics.csv")) and list(tmp_path.glob("**/last.ckpt"))
