"""Quantized weights: twin-log (LRQ-DiT) and baseline quantizers, rotations, and the quantized linear layer."""
