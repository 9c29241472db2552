"""LightningDataModule over in-memory slates: whole batches are indexed, never collated per item.

DataLoader worker processes inside joblib or Ray workers are known to crash
or hang, so the data stays in-process (``num_workers=0``).
"""
from __future__ import annotations

import lightning.pytorch as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from rerank.training.data import SlateTensors


class _WholeBatches(Dataset):
    """``dataset[list_of_indices]`` returns the whole batch at once."""

    def __init__(self, slates: SlateTensors):
        self.slates = slates

    def __len__(self) -> int:
        return len(self.slates)

    def __getitem__(self, idx):
        return self.slates.batch(torch.as_tensor(idx, dtype=torch.long))


class SlateDataModule(L.LightningDataModule):
    def __init__(self, train: SlateTensors, dev: SlateTensors, batch_size: int | None = None, seed: int = 0):
        """``batch_size``: utterances per batch; ``None`` is the full batch (L-BFGS)."""
        super().__init__()
        self.train, self.dev = train, dev
        self.batch_size = batch_size
        self.seed = seed

    def _loader(self, slates: SlateTensors, shuffle: bool) -> DataLoader:
        n = len(slates)
        size = n if self.batch_size is None else min(self.batch_size, max(n, 1))
        if shuffle and self.batch_size is not None:
            sampler = RandomSampler(range(n), generator=torch.Generator().manual_seed(self.seed))
        else:
            sampler = SequentialSampler(range(n))
        return DataLoader(_WholeBatches(slates), batch_size=None, sampler=BatchSampler(sampler, max(size, 1), drop_last=False),
                          num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        # Validation metrics need the whole dev list: one batch.
        return DataLoader(_WholeBatches(self.dev), batch_size=None,
                          sampler=BatchSampler(SequentialSampler(range(len(self.dev))), max(len(self.dev), 1), drop_last=False))
