"""The "DiT Multi-GPU" node: sequence-parallel sampling of one MODEL over several GPUs (or CPU processes)."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..accel.parallel.pool import PoolConfig
from ..accel.parallel.ulysses import MODES, SequenceParallelConfig
from .comfy.workers import apply_multi_gpu
from .compat import ADVANCED

DEVICE_KINDS = ("auto", "cuda", "cpu")


def parse_devices(text: str) -> tuple[int, ...]:
    """'0, 2' -> (0, 2); '' -> () (the first `device_count` devices)."""
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(f"devices must be CUDA indices separated by commas, like '0,1', got {text!r}") from None


class DiTMultiGPU(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelMultiGPU",
            display_name="DiT Multi-GPU",
            category="dit-accel",
            description="Splits the image/video tokens of every step across several GPUs (Ulysses sequence "
                        "parallelism on torch.distributed): each GPU runs every block on its share of the tokens "
                        "and the GPUs swap heads for tokens around attention. Works at CFG 1 too. Mode cfg adds a "
                        "second axis: cond and uncond on separate halves of the GPUs. Worker processes start on the "
                        "first run, are reused by later runs and stop when the model is unloaded. Chains with DiT "
                        "Block Cache, DiT Forecast and DiT Sparse Attention.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model: Wan, Flux, Chroma, Qwen-Image, HunyuanVideo, "
                                                "LTX-Video, LTX-2 (text-to-video), Lumina 2 / Z-Image, the reference "
                                                "model. SD3 is refused, saying why."),
                io.Int.Input("device_count", default=2, min=1, max=16,
                             tooltip="How many GPUs (or CPU processes) share each step. 1 returns the model "
                                     "unchanged. Refused when fewer GPUs are visible."),
                io.Combo.Input("mode", options=list(MODES), default="auto",
                               tooltip="auto: ulysses when the attention heads divide by the device count, ring "
                                       "otherwise. ulysses: each GPU attends with a share of the heads over all "
                                       "tokens (least traffic). ring: each GPU keeps every head for its tokens and "
                                       "gathers the other GPUs' keys and values. cfg: cond and uncond run on two "
                                       "halves of the GPUs (an even device_count), each half splitting its tokens "
                                       "as auto does (4 GPUs = 2 cfg x 2 ulysses). Only for CFG > 1: at CFG 1 both "
                                       "halves run the same call, so use auto there."),
                io.String.Input("devices", default="", **ADVANCED,
                                tooltip="CUDA device indices to use, e.g. '0,1' (one per device_count); empty: the "
                                        "first device_count devices. The first one runs in ComfyUI itself."),
                io.Combo.Input("backend", options=list(DEVICE_KINDS), default="auto", **ADVANCED,
                               tooltip="auto: CUDA (NCCL) when a GPU is present, else CPU worker processes (gloo; "
                                       "for testing). cuda / cpu: force one."),
                io.Float.Input("timeout_s", default=60.0, min=2.0, max=3600.0, step=1.0, **ADVANCED,
                               tooltip="The longest any GPU waits for another inside a step; a crashed or stuck "
                                       "worker fails the run with an error after at most this long."),
                io.Int.Input("cpu_threads", default=1, min=1, max=256, **ADVANCED,
                             tooltip="CPU backend only: torch threads of each worker process."),
            ],
            outputs=[io.Model.Output(tooltip="The model, sampled across the devices by every sampler node.")],
        )

    @classmethod
    def execute(cls, model, device_count: int, mode: str, devices: str = "", backend: str = "auto",
                timeout_s: float = 60.0, cpu_threads: int = 1) -> io.NodeOutput:
        kind = backend if backend != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        indices = parse_devices(devices)
        if indices and len(indices) != device_count:
            raise ValueError(f"devices lists {len(indices)} GPUs ({devices!r}) but device_count is {device_count}")
        pool = PoolConfig(world_size=device_count, device=kind, devices=indices, timeout_s=timeout_s,
                          threads=cpu_threads)
        return io.NodeOutput(apply_multi_gpu(model, SequenceParallelConfig(device_count, mode), pool))


NODES = [DiTMultiGPU]
