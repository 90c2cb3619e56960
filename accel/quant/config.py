"""Quantization settings: one frozen, versioned dataclass per scheme; `quantize_` dispatches on the type.

Each config serialises to a plain dict (`to_dict` / `config_from_dict`) so a saved file can say exactly how its
weights were made, and a file written by a newer format version is refused instead of misread.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

FORMAT_VERSION = 1  # bump when the meaning of a stored field changes

CODEBOOKS = ("twin_log", "uniform")
ROTATIONS = ("adaptive", "hadamard", "none")
WEIGHT_CALIBRATIONS = ("none", "gptq")


@dataclass(frozen=True)
class Float16Config:
    """The exact setting: nothing is quantized, the model is returned untouched."""

    version: int = FORMAT_VERSION


@dataclass(frozen=True)
class WeightOnlyConfig:
    """Weight-only quantization with per-group scales (activations stay 16-bit: W3A16 / W4A16 / W6A16 / W8A16).

    codebook "twin_log" is LRQ-DiT's Twin-Log Quantization (arXiv 2508.03485): the levels follow two logarithmic
    grids of different bases that meet inside the dense middle of the Gaussian-like, long-tailed weight
    distribution, fitted per layer; "uniform" is plain round-to-nearest on an evenly spaced grid, the baseline.
    clip_search picks each group's scale from a few clipping ratios by reconstruction error (both codebooks), then
    refines it by least squares (a few Lloyd steps, kept only where the group's error falls).
    calibration picks the error the scales minimise: "none" the weight's own (data-free); "gptq" rounds the columns
    in order and lets the rest absorb each column's error along the calibrated input Gram matrix (GPTQ), which needs
    calibration; the stored format is the same for both. (Weighing columns by E[x_k^2] alone, AWQ-like, was tried
    and measured worse than data-free on the reference model: 29.5 vs 29.9 dB at W4, 2 seeds.)
    """

    bits: int = 4
    group_size: int = 64
    codebook: str = "twin_log"
    clip_search: bool = True
    calibration: str = "none"
    version: int = FORMAT_VERSION

    def __post_init__(self):
        if self.bits not in (2, 3, 4, 6, 8):
            raise ValueError(f"bits must be 2, 3, 4, 6 or 8, got {self.bits}")
        if self.group_size < 8 or self.group_size % 8:
            raise ValueError(f"group_size must be a positive multiple of 8, got {self.group_size}")
        if self.codebook not in CODEBOOKS:
            raise ValueError(f"codebook must be one of {CODEBOOKS}, got {self.codebook!r}")
        if self.calibration not in WEIGHT_CALIBRATIONS:
            raise ValueError(f"calibration must be one of {WEIGHT_CALIBRATIONS}, got {self.calibration!r}")
        if self.calibration != "none" and not self.clip_search:
            raise ValueError("calibrated scales come from the scale search: set clip_search=True")

    @property
    def needs_calibration(self) -> bool:
        return self.calibration != "none"

    @property
    def needs_gram(self) -> bool:
        return self.calibration == "gptq"

    def for_width(self, in_features: int) -> "WeightOnlyConfig | None":
        """This config for a layer `in_features` wide: the largest group (a multiple of 8, at most group_size)
        dividing it, stored per layer; None when no group fits (the layer stays 16-bit)."""
        group = fitting_divisor(in_features, self.group_size, lambda g: g // 2, minimum=8, multiple=8)
        return None if group is None else replace(self, group_size=group)


def fitting_divisor(width: int, wanted: int, smaller, minimum: int, multiple: int = 1) -> int | None:
    """The first of wanted, smaller(wanted), ... (down to `minimum`) that divides `width` and is a multiple of
    `multiple`."""
    size = wanted
    while size >= minimum:
        if width % size == 0 and size % multiple == 0:
            return size
        size = smaller(size)
    return None


def fitting_rotation(width: int, wanted: int) -> int | None:
    """The largest power-of-4 Hadamard block, at most `wanted`, dividing `width`."""
    return fitting_divisor(width, wanted, lambda g: g // 4, minimum=4)


@dataclass(frozen=True)
class Int8Config:
    """W8A8: int8 weights and int8 dynamic activations with a block-diagonal rotation in front of the GEMM.

    The ComfyUI core recipe (INT8 tensor-wise weights with ConvRot) is `Int8Config.convrot()`: Hadamard groups of
    256, one int8 scale per output row, activations per token. The LRQ-DiT recipe uses the Adaptive Rotation Scheme
    (rotation="adaptive"): per layer, calibration statistics pick a plain Hadamard rotation (mild outliers) or an
    outlier-aware one (channel smoothing folded into the weight, then Hadamard) when a few channels carry salient
    outliers; activations are then quantized per token and per `act_group` channels.
    """

    rotation: str = "adaptive"
    rotation_group: int = 64           # Hadamard block size (a power of 4, as ComfyUI's regular Hadamard)
    act_group: int = 32                # channels per activation scale; 0 = one scale per token
    weight_group: int = 32             # channels per weight scale; 0 = one scale per output row
    outlier_ratio: float = 6.0         # channel absmax / median channel absmax above which a layer is "salient"
    smooth_alpha: float = 0.4          # migration strength of the outlier-aware rotation (0.4 measured
                                       # best of 0.4 / 0.5 / 0.65 on the reference model)
    version: int = FORMAT_VERSION

    def __post_init__(self):
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {ROTATIONS}, got {self.rotation!r}")
        size = self.rotation_group
        if self.rotation != "none" and (size < 4 or size & (size - 1) or (size.bit_length() - 1) % 2):
            raise ValueError(f"rotation_group must be a power of 4 (4, 16, 64, 256, ...), got {size}")
        for name in ("act_group", "weight_group"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.act_group and self.weight_group and self.act_group != self.weight_group:
            raise ValueError("act_group and weight_group must be equal when both are grouped (one scale per K-group)")

    @classmethod
    def convrot(cls) -> "Int8Config":
        """ComfyUI core's int8_tensorwise + convrot format (comfy-kitchen TensorWiseINT8Layout)."""
        return cls(rotation="hadamard", rotation_group=256, act_group=0, weight_group=0)

    @property
    def is_core_convrot(self) -> bool:
        return self.rotation == "hadamard" and self.act_group == 0 and self.weight_group == 0

    @property
    def needs_calibration(self) -> bool:
        return self.rotation == "adaptive"

    def for_width(self, in_features: int) -> "Int8Config | None":
        groups = [g for g in (self.act_group, self.weight_group) if g]
        if any(in_features % g for g in groups):
            return None
        if self.rotation == "none":
            return self
        rotation = fitting_rotation(in_features, self.rotation_group)
        return None if rotation is None else replace(self, rotation_group=rotation)


@dataclass(frozen=True)
class W4A8Config:
    """W4A8: twin-log codebook weights (`bits`, per-group scales) in a rotated basis, and int8 dynamic activations
    per token and per `group_size` channels, with the rotation chosen per layer by ARS exactly as in Int8Config
    (plain Hadamard, or smoothing + Hadamard when calibration shows salient outlier channels). The int8 activation
    step is emulated in the torch path (quantize, dequantize, codebook GEMM); there is no fused W4A8 kernel yet.
    """

    bits: int = 4
    group_size: int = 64
    rotation: str = "adaptive"
    rotation_group: int = 64
    outlier_ratio: float = 6.0
    smooth_alpha: float = 0.4
    version: int = FORMAT_VERSION

    def __post_init__(self):
        WeightOnlyConfig(bits=self.bits, group_size=self.group_size)  # same weight checks
        Int8Config(rotation=self.rotation, rotation_group=self.rotation_group, act_group=0, weight_group=0)

    @property
    def needs_calibration(self) -> bool:
        return self.rotation == "adaptive"

    def for_width(self, in_features: int) -> "W4A8Config | None":
        rotation = fitting_rotation(in_features, self.rotation_group)
        if rotation is None or in_features % self.group_size:
            return None
        return replace(self, rotation_group=rotation)


@dataclass(frozen=True)
class CoreW4A8Config:
    """ComfyUI core's own W4A8 format ("asym_w4a8_int8", comfy-kitchen AsymW4A8Int8Layout; loads in plain ComfyUI
    0.33+) written by our quantizer (`core_w4a8.py`): a per-layer codebook, fp8 group scales and, with
    calibration="gptq", GPTQ-compensated codes. group_size 16 and convrot_groupsize 256 are core's defaults."""

    group_size: int = 16
    convrot_groupsize: int = 256
    calibration: str = "none"
    version: int = FORMAT_VERSION

    def __post_init__(self):
        if self.group_size < 4 or (16 % self.group_size and self.group_size % 16):
            raise ValueError(f"group_size must be >= 4 and divide 16 or be a multiple of 16, got {self.group_size}")
        size = self.convrot_groupsize
        if size < 4 or size & (size - 1) or (size.bit_length() - 1) % 2:
            raise ValueError(f"convrot_groupsize must be a power of 4, got {size}")
        if self.calibration not in WEIGHT_CALIBRATIONS:
            raise ValueError(f"calibration must be one of {WEIGHT_CALIBRATIONS}, got {self.calibration!r}")

    @property
    def needs_calibration(self) -> bool:
        return self.calibration == "gptq"

    @property
    def needs_gram(self) -> bool:
        return self.calibration == "gptq"

    def for_width(self, in_features: int) -> "CoreW4A8Config | None":
        rotation = fitting_rotation(in_features, self.convrot_groupsize)
        if rotation is None or in_features % 16 or in_features % self.group_size:
            return None
        return replace(self, convrot_groupsize=rotation)


QuantConfig = Float16Config | WeightOnlyConfig | Int8Config | W4A8Config | CoreW4A8Config
CONFIG_TYPES = {cls.__name__: cls for cls in (Float16Config, WeightOnlyConfig, Int8Config, W4A8Config,
                                              CoreW4A8Config)}


def to_dict(config: QuantConfig) -> dict:
    return {"type": type(config).__name__, **asdict(config)}


def config_from_dict(data: dict) -> QuantConfig:
    data = dict(data)
    kind = data.pop("type", None)
    if kind not in CONFIG_TYPES:
        raise ValueError(f"unknown quantization config type {kind!r}; known: {sorted(CONFIG_TYPES)}")
    version = int(data.get("version", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise ValueError(f"quantization format version {version} is newer than this dit-accel understands "
                         f"({FORMAT_VERSION}); update dit-accel")
    cls = CONFIG_TYPES[kind]
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})
