"""Robult on UCI mfeat, trained by Lightning: `RobultModule`, a CSV logger and checkpoints.

    python examples/lightning_robult.py --epochs 30 --out lightning_runs

Trains on 5% labels (the rest unlabeled) from a `DataLoader` of `(views, target, labeled)` rows, logs
every loss term and the validation accuracy per epoch to `<out>/robult/version_*/metrics.csv`, keeps the
best checkpoint by validation accuracy and the last one, then prints the logged losses, the checkpoint
paths (they load with `torch.load(weights_only=True)`) and the test accuracy with each view missing.
Needs `pip install mkefast[lightning]` (and scikit-learn for the split).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import lightning
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from mkefast import robult
from mkefast.data import MultiViewTensors, load_mfeat, split_multiview
from mkefast.lightning import RobultModule


class Rows(Dataset):  # type: ignore[type-arg]
    """Rows of a split part: `(views by name, label, labeled)` or, for evaluation, `(views, label)`."""

    def __init__(self, part: MultiViewTensors, labeled: bool | None) -> None:
        self.part, self.labeled = part, labeled

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, i: int) -> tuple[object, ...]:
        views = {name: x[i] for name, x in self.part.views.items()}
        if self.labeled is None:
            return views, self.part.labels[i]
        return views, self.part.labels[i], torch.tensor(self.labeled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", default="fou,kar")
    parser.add_argument("--labeled-fraction", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="lightning_runs", help="folder of the CSV logs and checkpoints")
    args = parser.parse_args()

    lightning.seed_everything(args.seed, verbose=False)
    torch.set_num_threads(1)  # the model is small: more threads cost more than they save on a CPU
    views = args.views.split(",")
    split = split_multiview(load_mfeat(views), labeled_fraction=args.labeled_fraction, seed=args.seed)
    train = torch.utils.data.ConcatDataset([Rows(split.labeled, True), Rows(split.unlabeled, False)])
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(Rows(split.test, None), batch_size=1024)

    model = robult.Robult([split.labeled.views[v].shape[1] for v in views], 10, modality_names=views)
    module = RobultModule(model, robult.RobultConfig())
    logger = CSVLogger(args.out, name="robult")
    checkpoints = ModelCheckpoint(monitor="val/acc", mode="max", save_last=True, filename="best-{epoch}")
    trainer = lightning.Trainer(max_epochs=args.epochs, logger=logger, callbacks=[checkpoints],
                                enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(module, train_loader, val_loader)

    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/total")]
    print(f"{'epoch':>5}  {'sup':>7}  {'pu_lb':>7}  {'pu_ulb':>7}  {'rec':>7}  {'total':>7}")
    for r in rows:
        print(f"{r['epoch']:>5}  " + "  ".join(f"{float(r[f'train/{k}']):7.4f}"
                                            for k in ("sup", "pu_lb", "pu_ulb", "rec", "total")))
    best = torch.load(checkpoints.best_model_path, map_location="cpu", weights_only=True)
    print(f"best checkpoint: {checkpoints.best_model_path} (val/acc {float(checkpoints.best_model_score):.2f}, "
          f"epoch {best['epoch']}), last: {checkpoints.last_model_path}; both load with weights_only=True")
    accuracy = robult.evaluate(model, split.test.views, split.test.labels)
    print("test accuracy %: " + ", ".join(f"{name} {acc:.2f}" for name, acc in accuracy.items()))


if __name__ == "__main__":
    main()
