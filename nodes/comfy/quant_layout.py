"""TLQ codebook weights inside ComfyUI's quantized-tensor system, so ComfyUI's own UNETLoader loads our files.

What core does with a layer that has `{prefix}comfy_quant` (read in 0.8.0 `MixedPrecisionOps.Linear.
_load_from_state_dict` and 0.33.0 `comfy.ops._load_quantized_module`):
  1. `QUANT_ALGOS[format]` gives the storage dtype, extra parameter names and the layout name: an open dict.
  2. the layout name resolves through comfy-kitchen's `register_layout_class` registry: open.
  3. `F.linear` on the resulting QuantizedTensor dispatches to ops registered per layout with
     `register_layout_op` (aten.t / mm / addmm / linear), falling back to `dequantize()`: open.
  4. between 1 and 2, the per-format scale parsing is an if-chain over core's own format names whose `else`
     raises "Unsupported quantization format": closed, in both snapshots. UNETLoader passes only dtype options,
     so `model_options["custom_operations"]` (the one ops hook) is out of reach, and no registry feeds step 4.
So 1-3 are used as intended (a `QUANT_ALGOS["dit_accel_tlq{bits}"]` entry, a layout class, its linear ops calling
`kernels.quant` — the Triton codebook GEMM on CUDA, the torch reference elsewhere), and for step 4 exactly one core
function is wrapped: `comfy.ops.mixed_precision_ops` (same name and signature in both snapshots; `pick_operations`
calls it for every file with `comfy_quant` layers). The wrapper returns a subclass of core's ops class whose Linear
reads and writes our formats and hands every other layer to core's code unchanged. It is idempotent (marked), checks
that the core function and its Linear look as expected (else one warning and TLQ files fail with core's own error),
and logs once. Core's LoRA path (`convert_weight` -> dequantize, `set_weight` -> `requantize_from_float`),
offloading (`.to(device)` moves every tensor of the layout) and dynamic VRAM see an ordinary QuantizedTensor.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass

import torch

from ...accel.quant.serialize import encode_layer_conf
from ...accel.quant.tlq_format import FORMATS as CODEBOOK_FORMATS, TLQFormat, format_name as codebook_format
from ...accel.quant.twin_log import make_codebook, quantize_groups
from ...kernels.quant import codebook_linear, pack_codes
from ...kernels.quant.packing import PLANES
from ...kernels.quant.reference import dequantize_codebook

log = logging.getLogger("dit_accel")

_WRAP_MARK = "_dit_accel_tlq_wrapped"
_DEFAULT_GROUP = 64


def layout_name(bits: int) -> str:
    return f"DitAccelTLQ{bits}Layout"


def _default_group(k: int) -> int:
    """Group size for re-quantizing a weight that arrives without one (LoRA re-quantization on ComfyUI 0.8.0)."""
    return next(g for g in (_DEFAULT_GROUP, 32, 16, 8) if k % g == 0)


def _build_layout_classes():
    from comfy_kitchen.tensor.base import BaseLayoutParams, QuantizedLayout

    @dataclass(frozen=True)
    class TLQParams(BaseLayoutParams):
        """scale: fp16 (N, K/group); codebook: fp32 (2**bits,); plane1: the second bit plane of 3/6-bit codes."""
        codebook: torch.Tensor = None
        plane1: torch.Tensor | None = None
        group_size: int = _DEFAULT_GROUP
        transposed: bool = False

        def _tensor_fields(self) -> list[str]:
            return ["scale", "codebook"] + (["plane1"] if self.plane1 is not None else [])

    class TLQLayout(QuantizedLayout):
        """Weight-only codebook layout: qdata = bit plane 0 (uint8, (N, K*w0/8)), see kernels/quant/packing.py."""

        BITS = 0
        Params = TLQParams

        @classmethod
        def quantize(cls, tensor: torch.Tensor, scale=None, stochastic_rounding=0, inplace_ops=False,
                     group_size: int | None = None, codebook: torch.Tensor | None = None, **_):
            # Core calls this to re-quantize a patched float weight (LoRA merged with set_weight); `scale` is
            # core's "recalculate" request, rounding is deterministic nearest-codebook.
            weight = tensor.detach().float()
            group = group_size or _default_group(weight.shape[1])
            if codebook is None:
                codebook = make_codebook(weight.cpu(), cls.BITS, group, "twin_log")
            codebook = codebook.float().to(weight.device)
            codes, scales = quantize_groups(weight, codebook, group, clip_search=True)
            planes = pack_codes(codes, cls.BITS)
            params = TLQParams(scale=scales, orig_dtype=tensor.dtype, orig_shape=tuple(tensor.shape),
                               codebook=codebook, plane1=planes[1] if len(planes) > 1 else None, group_size=group)
            return planes[0], params

        @classmethod
        def planes(cls, qdata: torch.Tensor, params: TLQParams) -> list[torch.Tensor]:
            return [qdata] if params.plane1 is None else [qdata, params.plane1]

        @classmethod
        def dequantize(cls, qdata: torch.Tensor, params: TLQParams) -> torch.Tensor:
            k = params.scale.shape[1] * params.group_size  # the stored (N, K), transposed or not
            return dequantize_codebook(cls.planes(qdata, params), cls.BITS, params.codebook, params.scale, k,
                                       dtype=params.orig_dtype)

        @classmethod
        def get_plain_tensors(cls, qtensor):
            p = qtensor._params
            return qtensor._qdata, p.scale, p.codebook, p.plane1

        @classmethod
        def state_dict_tensors(cls, qdata: torch.Tensor, params: TLQParams) -> dict[str, torch.Tensor]:
            # Suffixes after "weight": the keys accel/quant/serialize.py writes and reads.
            out = {"": qdata, "_scale": params.scale, "_codebook": params.codebook}
            if params.plane1 is not None:
                out["_plane1"] = params.plane1
            return out

        @classmethod
        def requantize_kwargs(cls, qtensor) -> dict:
            return {"group_size": qtensor._params.group_size, "codebook": qtensor._params.codebook}

    return TLQParams, TLQLayout


def _register_ops(base_layout) -> None:
    from comfy_kitchen.tensor.base import QuantizedTensor, dequantize_args, register_layout_op

    def run(x: torch.Tensor, weight, bias):
        layout = weight.layout_cls
        p = weight._params
        return codebook_linear(x, layout.planes(weight._qdata, p), layout.BITS, p.codebook, p.scale, bias)

    def plain(x):
        return x.dequantize() if isinstance(x, QuantizedTensor) else x

    @register_layout_op(torch.ops.aten.t.default, base_layout)
    def _t(qt, args, kwargs):  # a flag, not a copy: F.linear on subclasses arrives as addmm(bias, x, W.t())
        old = args[0]._params
        params = dataclasses.replace(old, orig_shape=(old.orig_shape[1], old.orig_shape[0]),
                                     transposed=not old.transposed)
        return QuantizedTensor(args[0]._qdata, args[0]._layout_cls, params)

    @register_layout_op(torch.ops.aten.linear.default, base_layout)
    def _linear(qt, args, kwargs):
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        if not isinstance(w, QuantizedTensor) or w._params.transposed:
            return torch.nn.functional.linear(*dequantize_args((x, w, bias)))
        return run(plain(x), w, bias)

    @register_layout_op(torch.ops.aten.mm.default, base_layout)
    def _mm(qt, args, kwargs):
        a, b = args[0], args[1]
        if not isinstance(b, QuantizedTensor) or not b._params.transposed:
            return torch.mm(*dequantize_args((a, b)))
        return run(plain(a), b, None)

    @register_layout_op(torch.ops.aten.addmm.default, base_layout)
    def _addmm(qt, args, kwargs):
        bias, a, b = args[0], args[1], args[2]
        if (not isinstance(b, QuantizedTensor) or not b._params.transposed or kwargs.get("beta", 1) != 1
                or kwargs.get("alpha", 1) != 1 or bias.ndim != 1):
            return torch.addmm(*dequantize_args((bias, a, b)), **kwargs)
        return run(plain(a), b, bias)


# --- registration: layout classes, QUANT_ALGOS entries, the loader hook ----------------------------------------

def register_layouts() -> dict[int, type]:
    """Layout class per bit width (registered once per process, whichever copy of the pack imports first)."""
    import comfy.quant_ops as quant_ops
    from comfy_kitchen.tensor.base import LAYOUTS, register_layout_class
    existing = {bits: LAYOUTS.get(layout_name(bits)) for bits in PLANES}
    if all(existing.values()):
        return existing
    _, base = _build_layout_classes()
    _register_ops(base)
    classes = {}
    for bits in PLANES:
        cls = type(layout_name(bits), (base,), {"BITS": bits, "__module__": __name__,
                                              "__doc__": f"TLQ {bits}-bit codebook weights."})
        register_layout_class(layout_name(bits), cls)
        classes[bits] = cls
        quant_ops.QUANT_ALGOS.setdefault(codebook_format(bits), {
            "storage_t": torch.uint8,
            "parameters": {"weight_scale"},
            "comfy_tensor_layout": layout_name(bits),
            "quantize_input": False,  # weight-only (W*A16): core must not quantize the activations
        })
    return classes


def _layer_conf(state_dict: dict, prefix: str) -> dict | None:
    conf = state_dict.get(f"{prefix}comfy_quant")
    return None if conf is None else json.loads(conf.numpy().tobytes())


def _load_tlq(module, conf: dict, state_dict: dict, prefix: str, compute_dtype: torch.dtype) -> list[str]:
    """Pop one TLQ layer's tensors and set `module.weight` to a QuantizedTensor; returns the keys it consumed."""
    from comfy.quant_ops import QuantizedTensor, get_layout_class
    tlq = TLQFormat.from_conf(conf)
    n, k = module.out_features, module.in_features
    device = module.factory_kwargs.get("device") if hasattr(module, "factory_kwargs") else None
    names = list(tlq.shapes(n, k))
    tensors = {name: state_dict.pop(f"{prefix}{name}", None) for name in names}
    planes, scale, codebook = tlq.decode(tensors, n, k, prefix[:-1])
    if device is not None:
        planes, scale, codebook = [p.to(device) for p in planes], scale.to(device), codebook.to(device)
    layout = get_layout_class(layout_name(tlq.bits))
    params = layout.Params(scale=scale, orig_dtype=compute_dtype, orig_shape=(n, k), codebook=codebook.float(),
                           plane1=planes[1] if len(planes) > 1 else None, group_size=tlq.group)
    module.quant_format = conf["format"]
    module.layout_type = layout_name(tlq.bits)
    module.weight = torch.nn.Parameter(QuantizedTensor(planes[0].to(torch.uint8), module.layout_type, params),
                                       requires_grad=False)
    return [f"{prefix}{name}" for name in names]


def _core_supports_weight_only() -> bool:
    """0.33.0 reads QUANT_ALGOS[...]["quantize_input"]; 0.8.0 quantizes every layer's input with its layout."""
    from comfy.quant_ops import QUANT_ALGOS
    return any("quantize_input" in v for k, v in QUANT_ALGOS.items() if k not in CODEBOOK_FORMATS)


def _with_tlq_linear(core_ops: type, weight_only_core: bool) -> type:
    core_linear = core_ops.Linear

    class Linear(core_linear):
        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                  unexpected_keys, error_msgs):
            conf = _layer_conf(state_dict, prefix)
            if conf is None or conf.get("format") not in CODEBOOK_FORMATS:
                return super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                                     unexpected_keys, error_msgs)
            state_dict.pop(f"{prefix}comfy_quant")
            consumed = _load_tlq(self, conf, state_dict, prefix, core_ops._compute_dtype)
            self._dit_accel_conf = conf
            # The bias (the one plain tensor left) loads the torch way, skipping core's quant parsing.
            torch.nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                                  unexpected_keys, error_msgs)
            for key in consumed:
                if key in missing_keys:
                    missing_keys.remove(key)

        def state_dict(self, *args, destination=None, prefix="", **kwargs):
            conf = getattr(self, "_dit_accel_conf", None)
            if conf is None or not hasattr(self.weight, "_params"):
                return super().state_dict(*args, destination=destination, prefix=prefix, **kwargs)
            sd = destination if destination is not None else {}
            if self.bias is not None:
                sd[f"{prefix}bias"] = self.bias
            sd.update(self.weight.state_dict(f"{prefix}weight"))
            sd[f"{prefix}comfy_quant"] = encode_layer_conf(
                {**conf, "group_size": self.weight._params.group_size})
            return sd

        def forward(self, input, *args, **kwargs):
            if weight_only_core or getattr(self, "_dit_accel_conf", None) is None:
                return super().forward(input, *args, **kwargs)
            # ComfyUI 0.8.0 would quantize the activation with the weight's layout; TLQ is weight-only, so take
            # core's cast path (device moves, LoRA weight functions), which keeps the QuantizedTensor when no
            # function is attached and F.linear dispatches to our ops.
            return self.forward_comfy_cast_weights(input)

    Linear.__name__ = Linear.__qualname__ = core_linear.__name__
    return type(core_ops.__name__, (core_ops,), {"Linear": Linear})


def install_loader_hook() -> bool:
    """Wrap `comfy.ops.mixed_precision_ops` once so its Linear reads TLQ layers; False (one warning) if core's
    function is not the one this was written against."""
    import comfy.ops
    core = comfy.ops.mixed_precision_ops
    if getattr(core, _WRAP_MARK, False):
        return True
    probe = core({})
    if not (isinstance(probe, type) and hasattr(probe, "Linear") and hasattr(probe, "_compute_dtype")
            and hasattr(probe.Linear, "forward_comfy_cast_weights")):
        log.warning("dit-accel: comfy.ops.mixed_precision_ops is not the one dit-accel knows (ComfyUI 0.8-0.33); "
                    "TLQ files will not load through UNETLoader (INT8 / fp8 files are unaffected)")
        return False
    weight_only_core = _core_supports_weight_only()

    @functools.wraps(core)
    def mixed_precision_ops(*args, **kwargs):
        return _with_tlq_linear(core(*args, **kwargs), weight_only_core)

    setattr(mixed_precision_ops, _WRAP_MARK, True)
    comfy.ops.mixed_precision_ops = mixed_precision_ops
    log.info("dit-accel: TLQ layouts %s registered; comfy.ops.mixed_precision_ops wrapped to load them",
             ", ".join(sorted(CODEBOOK_FORMATS)))
    return True


def install() -> bool:
    """Everything UNETLoader needs for TLQ files; safe to call any number of times. False when unavailable."""
    try:
        import comfy_kitchen.tensor.base  # noqa: F401 - core's quantized tensors come from comfy-kitchen
    except ImportError:
        log.warning("dit-accel: comfy-kitchen is not installed, so TLQ files cannot load (pip install comfy-kitchen)")
        return False
    try:
        register_layouts()
        return install_loader_hook()
    except Exception as exc:  # never break the pack's import: the other nodes do not need this
        log.warning("dit-accel: could not register the TLQ layouts (%s: %s); TLQ files will not load",
                    type(exc).__name__, exc)
        return False
