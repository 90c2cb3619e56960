"""The TLQ layer format, in one place: the tensor names, shapes and dtypes of one twin-log (or uniform) codebook
layer in a file, and its encode / decode. The serializer (`serialize.py`, pure torch) and ComfyUI's loader hook
(`nodes/comfy/quant_layout.py`) both read and write layers through `TLQFormat`.

Per layer `p` (N outputs, K inputs, codes packed in bit planes by `kernels/quant/packing.py`):
  p.weight          uint8 (N, K * w0 / 8)   bit plane 0
  p.weight_plane1   uint8 (N, K * w1 / 8)   bit plane 1 (3- and 6-bit codes only)
  p.weight_scale    fp16  (N, K / group)    one scale per row and group
  p.weight_codebook fp32  (2**bits,)        the layer's codebook (levels on [-1, 1])
  p.comfy_quant     uint8 JSON              {"format": "dit_accel_tlq{bits}", "bits": ..., "group_size": ...}
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...kernels.quant import plane_widths

BITS = (2, 3, 4, 6, 8)
LEGACY_FORMAT = "dit_accel_codebook"  # format version 1 files written before the per-bits names


def format_name(bits: int) -> str:
    """One format name per bit width: core's loader knows a layer's layout from its format name alone."""
    return f"dit_accel_tlq{bits}"


FORMATS: dict[str, int] = {format_name(b): b for b in BITS}


@dataclass(frozen=True)
class TLQFormat:
    bits: int
    group: int

    @classmethod
    def from_conf(cls, conf: dict) -> "TLQFormat":
        return cls(int(conf.get("bits", FORMATS.get(conf.get("format"), 0))), int(conf["group_size"]))

    @staticmethod
    def reads(conf: dict | None) -> bool:
        return conf is not None and (conf.get("format") in FORMATS or conf.get("format") == LEGACY_FORMAT)

    @property
    def name(self) -> str:
        return format_name(self.bits)

    def conf(self) -> dict:
        return {"format": self.name, "bits": self.bits, "group_size": self.group}

    def shapes(self, n: int, k: int) -> dict[str, tuple[int, ...]]:
        """Tensor suffix (after the layer prefix) -> shape, for an n x k layer."""
        widths = plane_widths(self.bits)
        out = {"weight": (n, k * widths[0] // 8)}
        if len(widths) > 1:
            out["weight_plane1"] = (n, k * widths[1] // 8)
        out["weight_scale"] = (n, k // self.group)
        out["weight_codebook"] = (2 ** self.bits,)
        return out

    def encode(self, planes: list[torch.Tensor], scales: torch.Tensor, codebook: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        out = {"weight": planes[0], "weight_scale": scales, "weight_codebook": codebook}
        if len(planes) > 1:
            out["weight_plane1"] = planes[1]
        return out

    def decode(self, tensors: dict[str, torch.Tensor | None], n: int, k: int, layer: str
               ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(planes, scales, codebook) from a layer's tensors, each checked against the model's n x k layer."""
        if k % self.group:
            raise ValueError(f"layer {layer}: group_size {self.group} does not divide in_features {k}")
        for suffix, shape in self.shapes(n, k).items():
            t = tensors.get(suffix)
            if t is None:
                raise ValueError(f"quantized file is missing '{layer}.{suffix}' (re-save it with DiT Save Quantized "
                                 "Model)")
            if tuple(t.shape) != shape:
                raise ValueError(f"quantized file does not fit the model: '{layer}.{suffix}' has shape "
                                 f"{tuple(t.shape)}, the model's layer {layer} ({n}x{k}) needs {shape}")
        planes = [tensors["weight"]] + ([tensors["weight_plane1"]] if "weight_plane1" in self.shapes(n, k) else [])
        return planes, tensors["weight_scale"], tensors["weight_codebook"]
