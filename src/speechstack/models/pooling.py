"""Shared pieces of the sequence families: pooling over time and the classifier head.

Every sequence model ends the same way: frame features ``(batch, frames, dim)`` (with an
optional ``(batch, frames)`` boolean mask of valid frames) are pooled to ``(batch, dim)``
and mapped to logits by ``ClassifierHead``. Families choose the pooling by name in config.
"""

from __future__ import annotations

import torch
from torch import nn

from speechstack.params.models import PoolingName


class Pooling(nn.Module):
    """``(batch, frames, dim)`` -> ``(batch, out_dim)``; padded frames are ignored.

    ``attention`` learns one score per frame (a linear layer), softmax over valid frames;
    ``mean_max`` concatenates mean and max (``out_dim = 2 * dim``).
    """

    def __init__(self, name: PoolingName, dim: int) -> None:
        super().__init__()
        if name not in ("mean", "sum", "max", "attention", "mean_max"):
            raise ValueError(
                f"unknown pooling '{name}'; known: mean, sum, max, attention, mean_max"
            )
        self.name = name
        self.out_dim = 2 * dim if name == "mean_max" else dim
        self.score = nn.Linear(dim, 1) if name == "attention" else None

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        weights = mask.unsqueeze(-1).to(frames.dtype)  # (batch, frames, 1)
        count = weights.sum(dim=1).clamp_min(1.0)
        if self.name == "sum":
            return (frames * weights).sum(dim=1)
        mean = (frames * weights).sum(dim=1) / count
        if self.name == "mean":
            return mean
        largest = frames.masked_fill(~mask.unsqueeze(-1), torch.finfo(frames.dtype).min)
        largest = largest.max(dim=1).values
        if self.name == "max":
            return largest
        if self.name == "mean_max":
            return torch.cat([mean, largest], dim=-1)
        assert self.score is not None
        scores = self.score(frames).squeeze(-1).masked_fill(~mask, torch.finfo(frames.dtype).min)
        attention = torch.softmax(scores.float(), dim=1).to(frames.dtype).unsqueeze(-1)
        return (frames * attention).sum(dim=1)


class ClassifierHead(nn.Module):
    """Pooled features ``(batch, dim)`` -> dropout -> linear -> logits ``(batch, classes)``."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(pooled))


class PooledClassifier(nn.Module):
    """``Pooling`` followed by ``ClassifierHead``: frame features -> logits."""

    def __init__(
        self, pooling: PoolingName, dim: int, num_classes: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.pooling = Pooling(pooling, dim)
        self.head = ClassifierHead(self.pooling.out_dim, num_classes, dropout)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.pooling(frames, mask))
