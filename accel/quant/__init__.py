"""Quantized weights: twin-log (LRQ-DiT) and baseline quantizers, rotations, and the quantized linear layer."""
from .api import collect_channel_stats, default_filter, quantize_, target_layers, weight_bytes_report
from .config import (FORMAT_VERSION, Float16Config, Int8Config, QuantConfig, W4A8Config, WeightOnlyConfig,
                     config_from_dict, to_dict)
from .linear import CodebookA8Linear, CodebookLinear, Int8Linear

__all__ = ["quantize_", "collect_channel_stats", "default_filter", "target_layers", "weight_bytes_report",
           "FORMAT_VERSION", "Float16Config", "Int8Config", "QuantConfig", "W4A8Config", "WeightOnlyConfig",
           "config_from_dict", "to_dict", "CodebookA8Linear", "CodebookLinear", "Int8Linear"]
