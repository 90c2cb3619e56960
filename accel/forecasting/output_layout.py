"""The model output's layout, so forecasters keep one tensor per stream whatever the family returns.

Most families return one tensor, batch first. LTX-2 (ltxav) returns a list, [video, audio], both batch first: the
forecaster then holds each row's parts flattened side by side, and a forecast is split back into the list.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OutputLayout:
    parts: tuple[tuple[tuple[int, ...], torch.dtype], ...] | None = None  # per part: shape without batch, dtype
    container: type = list

    @classmethod
    def of(cls, out) -> "OutputLayout":
        if isinstance(out, torch.Tensor):
            return cls()
        if isinstance(out, (list, tuple)) and out and all(isinstance(p, torch.Tensor) for p in out):
            batch = {p.shape[0] for p in out}
            if len(batch) != 1:
                raise ValueError(f"a list output must share its batch size to be forecast, got {sorted(batch)}")
            return cls(tuple((tuple(p.shape[1:]), p.dtype) for p in out), type(out))
        raise TypeError(f"cannot forecast a model output of type {type(out).__name__}: expected a tensor or a list "
                        "of tensors sharing the batch")

    def pack(self, out) -> torch.Tensor:
        """One (batch, ...) tensor: the output itself, or its parts flattened per row and concatenated."""
        if self.parts is None:
            return out
        dtype = torch.promote_types(*[p.dtype for p in out]) if len(out) > 1 else out[0].dtype
        return torch.cat([p.reshape(p.shape[0], -1).to(dtype) for p in out], dim=1)

    def unpack(self, packed: torch.Tensor):
        if self.parts is None:
            return packed
        sizes = [int(torch.Size(shape).numel()) for shape, _ in self.parts]
        pieces = packed.split(sizes, dim=1)
        return self.container(piece.reshape(packed.shape[0], *shape).to(dtype)
                              for piece, (shape, dtype) in zip(pieces, self.parts))
