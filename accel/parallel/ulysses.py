"""Ulysses sequence parallelism (DeepSpeed-Ulysses, Jacobs et al. 2023; USP, Fang & Zhao 2024) as a dit-accel patch.

Every rank runs the same model on its own contiguous shard of the image/video tokens; text tokens stay whole on every
rank. Outside attention nothing crosses the wire: norms, modulation, FFN and cross-attention onto the text are per
token, and the block args that run over the tokens (rotary tables, per-token timesteps, token ranges: the family's
`SequenceLayout`) are narrowed to the shard with it. Around each self-attention (or joint text+image attention) one
all-to-all turns q, k, v from (B, H, L/P, D) into (B, H/P, L, D), the unchanged attention backend (or an inner patch:
sparse attention) runs on the whole sequence for its head group, and one more all-to-all turns the output back.
Attention of whole streams onto the image (LTX-2's audio queries onto the video) gathers the image keys and values.
Where the heads should not be split ("ring" mode; "auto" picks it when the heads do not divide by the world size) each
rank keeps its queries and every head, and gathers the other ranks' keys and values instead: ring attention's volume,
without its overlap.

The split happens in `before_blocks` (first patch: every inner patch sees the shard, so block caches keep per-shard
state and their memory divides by the world size); the gather in `after_blocks` (the host runs it last), so the
model's head gets every token on every rank.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..adapters.base import SequenceLayout
from ..context import StepContext
from ..patch import AttentionCall, BlockCall, DiTPatch, RunAttention, RunBlock
from ..state import RunState
from . import comm

MODES = ("auto", "ulysses", "ring", "cfg")
CFG_GROUPS = 2  # mode "cfg": cond and uncond (ComfyUI's two conditioning chunks) on two halves of the ranks


@dataclass(frozen=True)
class SequenceParallelConfig:
    """world_size: ranks in all (1 = the unpatched model, bit for bit).
    mode: "ulysses" (all-to-all head split), "ring" (keys/values gathered, every head local), "auto" (ulysses when
        the attention heads divide by the ranks, ring otherwise), "cfg" (the conditioning chunks on two cfg groups
        of world_size / 2 ranks, each splitting its tokens as "auto" does: 4 ranks = 2 cfg x 2 sequence)."""

    world_size: int = 2
    mode: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if self.world_size > 1 and self.world_size % self.cfg_groups:
            raise ValueError(f"mode 'cfg' needs an even number of devices (two cfg groups), got {self.world_size}")

    @property
    def cfg_groups(self) -> int:
        """Groups the conditioning chunks are shared over (1: no cfg axis)."""
        return CFG_GROUPS if self.mode == "cfg" and self.world_size > 1 else 1

    @property
    def sequence_ranks(self) -> int:
        """Ranks that split one call's image tokens."""
        return self.world_size // self.cfg_groups

    def mode_for(self, heads: int) -> str:
        if self.mode in ("ulysses", "ring"):
            return self.mode
        return "ulysses" if heads % self.sequence_ranks == 0 else "ring"


def cfg_groups_of(patches) -> int:
    """The cfg group count of a run's patches (every rank lays out its mesh from it at the run's start)."""
    return next((p.config.cfg_groups for p in patches if isinstance(p, SequenceParallelPatch)), 1)


@dataclass
class _CallSplit:
    """This model call's split: every rank's image-token count, and where this block's attention finds its text."""

    sizes: list[int] = field(default_factory=list)
    text: int = 0          # text tokens in this block's joint attention (0: image-only self-attention)
    active: bool = False   # inside a block: attention calls of the image tokens get the parallel treatment
    modes: dict[str, int] = field(default_factory=dict)  # attention calls per mode, for the summary


def local_ranges(ranges, pieces: list[tuple[int, int, int]]) -> list[tuple]:
    """Token ranges (start, end or None, *rest) over the one-process stream, onto a rank's stream made of `pieces`
    (full start, full end, local start): each range keeps its part in every piece, the rest of the tuple unchanged.
    A range that misses this rank's tokens is dropped (the model then leaves those tokens alone here too)."""
    out = []
    for a, b, *rest in ranges:
        for lo_full, hi_full, lo_local in pieces:
            lo, hi = max(a, lo_full), hi_full if b is None else min(b, hi_full)
            if lo < hi:
                out.append((lo - lo_full + lo_local, hi - lo_full + lo_local, *rest))
    return out


def _as_tensor(value, to_tensor=None):
    """A block arg as a tensor, where the family gives a way (`SequenceLayout.token_tensor`) for its own container."""
    if to_tensor is None or value is None or isinstance(value, torch.Tensor):
        return value
    return to_tensor(value)


def _local_rows(key: str, value, start: int, local: int, total: int, to_tensor=None):
    """A per-image-token block arg (B, L, ...) narrowed to this rank's tokens; one row for every token stays whole
    (and as it was: `to_tensor` turns a family's own container into its tensor only to look)."""
    rows = _as_tensor(value, to_tensor)
    if not isinstance(rows, torch.Tensor) or rows.dim() < 2 or rows.shape[1] == 1:
        return value
    if rows.shape[1] != total:
        raise comm.ParallelError(f"block arg {key!r} has {rows.shape[1]} rows on dim 1 for {total} image tokens; "
                                 "the family's SequenceLayout is wrong for this model")
    return rows[:, start:start + local]


class SequenceParallelPatch(DiTPatch):
    name = "sequence_parallel"
    run_type = _CallSplit  # this call's split (`run_data(run)`), like every patch's run data

    def __init__(self, config: SequenceParallelConfig, layout: SequenceLayout):
        self.config = config
        self.layout = layout

    def on_run_start(self, run: RunState) -> None:
        # The workers may start after this (ComfyUI runs its wrappers in node order): the group is checked at the
        # first block, where it is first needed.
        if self.config.world_size > 1:
            comm.enter_run()
            self.run_data(run)

    def on_run_end(self, run: RunState) -> str | None:
        if self.config.world_size <= 1:
            return None
        comm.leave_run()
        split = self.run_data(run)
        calls = ", ".join(f"{n} {mode}" for mode, n in sorted(split.modes.items())) or "none"
        line = (f"{self.name}: {self.config.world_size} ranks, image tokens split {split.sizes or '-'}; "
                f"attention calls: {calls}")
        if self.config.cfg_groups > 1:
            line += (f"; cfg axis: {self.config.cfg_groups} groups x {self.config.sequence_ranks} ranks, "
                     f"{run.metrics.get('cfg_split_calls', 0):.0f} model calls split by conditioning, "
                     f"{run.metrics.get('cfg_whole_calls', 0):.0f} run whole on every group (fewer chunks than "
                     "groups: CFG 1 or cond/uncond in separate calls; mode auto uses every device there); the other "
                     "methods' lines count this group's rows")
        return line

    # ---- the token split ----------------------------------------------------------------------------------
    def before_blocks(self, run: RunState, ctx: StepContext, call: BlockCall) -> None:
        if self.config.sequence_ranks <= 1:
            return
        group = comm.group()
        if group is None or group.world != self.config.sequence_ranks:
            raise comm.ParallelError(f"sequence parallelism over {self.config.sequence_ranks} ranks, but this process has "
                                     f"{'no worker processes' if group is None else f'{group.world} ranks'}; use the "
                                     "DiT Multi-GPU node (or accel.parallel.pool.WorkerPool outside ComfyUI)")
        split = self.run_data(run)
        hidden = call.args[self.layout.image_key]
        split.sizes = comm.even_split(hidden.shape[1], group.world)
        start = sum(split.sizes[:group.rank])
        # In place in the host's args dict: the inner patches' before_blocks and the first block see the shard.
        call.args[self.layout.image_key] = hidden[:, start:start + split.sizes[group.rank]].contiguous()

    def around_block(self, run: RunState, ctx: StepContext, call: BlockCall, run_block: RunBlock) -> dict:
        if self.config.sequence_ranks <= 1:
            return run_block(call.args)
        split = self.run_data(run)
        rank = comm.group().rank
        args = dict(call.args)
        local = split.sizes[rank]
        layout = self.layout
        if call.kind in layout.joint_kinds:
            split.text = args[layout.image_key].shape[1] - local
        elif layout.text_key is not None and isinstance(args.get(layout.text_key), torch.Tensor):
            split.text = args[layout.text_key].shape[1]
        else:
            split.text = 0
            text = args.get("txt")
            if isinstance(text, torch.Tensor) and text.dim() == 3 and text.shape[1] == local:
                # Self- and cross-attention would look alike (both k lengths equal the shard): refuse, don't guess.
                raise comm.ParallelError(f"sequence parallelism cannot tell self- from cross-attention when the text "
                                         f"has as many tokens ({local}) as a rank's image shard; use another "
                                         f"number of devices or resolution")
        self._refuse_unsplittable(args, local)
        self._localize(call.kind in layout.joint_kinds, args, split, rank)
        split.active = True
        try:
            return run_block(args)
        finally:
            split.active = False

    def _refuse_unsplittable(self, args: dict, local: int) -> None:
        """Fail with the family's reason on block args the split cannot follow (yet), before anything is computed."""
        layout = self.layout
        for key in layout.whole_keys:
            value = args.get(key)
            if isinstance(value, torch.Tensor) and value.dim() == 3 and value.shape[1] == local:
                raise comm.ParallelError(f"sequence parallelism cannot tell {key!r} ({local} tokens, kept whole) from "
                                         f"a rank's image shard of the same length; use another number of devices "
                                         "or resolution")
        for key, what in layout.refuse_keys:
            if args.get(key) is not None:
                raise comm.ParallelError(f"sequence parallelism cannot split {what} ({key!r}) yet; run this model "
                                         "on one device")
        for key, why in layout.single_row_keys:
            rows = _as_tensor(args.get(key), layout.token_tensor)
            if isinstance(rows, torch.Tensor) and rows.dim() >= 2 and rows.shape[1] > 1:
                raise comm.ParallelError(f"sequence parallelism cannot run this model with a value per token in "
                                         f"{key!r} yet: {why}; run it on one device")

    def _localize(self, joint: bool, args: dict, split: _CallSplit, rank: int) -> None:
        """The block args that run over the tokens (rotary tables, per-token rows, token ranges), in place in this
        block call's copy of the args, narrowed to this rank's tokens."""
        layout = self.layout
        for key in ((layout.pe_key,) if layout.pe_key is not None else ()) + layout.extra_pe_keys:
            if args.get(key) is not None:
                args[key] = self._local_pe(args[key], split, rank)
        start, local, total = sum(split.sizes[:rank]), split.sizes[rank], sum(split.sizes)
        for key in layout.token_keys:
            args[key] = _local_rows(key, args.get(key), start, local, total, layout.token_tensor)
        if layout.range_keys:
            pieces = self._pieces(joint, start, local, total, split.text)
            for key in layout.range_keys:
                if args.get(key) is not None:
                    args[key] = local_ranges(args[key], pieces)

    def _pieces(self, joint: bool, start: int, local: int, total: int, text: int) -> list[tuple[int, int, int]]:
        """Where this rank's `image_key` stream comes from in the one-process stream: (full start, full end, local
        start) per contiguous piece. A joint stream keeps the whole text on every rank."""
        if not joint or text == 0:
            return [(start, start + local, 0)]
        if self.layout.text_first:
            return [(0, text, 0), (text + start, text + start + local, text)]
        return [(start, start + local, 0), (total, total + text, local)]

    def _local_pe(self, pe, split: _CallSplit, rank: int):
        if isinstance(pe, (tuple, list)):  # a tuple of tables (LTX-Video: cos and sin, or a matrix and a flag)
            return type(pe)(self._local_pe(t, split, rank) if isinstance(t, torch.Tensor) else t for t in pe)
        if not isinstance(pe, torch.Tensor):
            return pe
        dim = self.layout.pe_token_dim
        total = sum(split.sizes)
        text = pe.shape[dim] - total  # rotary rows of joint text tokens, if the table covers them
        if text < 0:
            raise comm.ParallelError(f"the rotary table has {pe.shape[dim]} rows on dim {dim} for {total} image "
                                     "tokens; the family's SequenceLayout is wrong for this model")
        start = sum(split.sizes[:rank])
        image_start = (text if self.layout.text_first else 0) + start
        image = pe.narrow(dim, image_start, split.sizes[rank])
        if text == 0:
            return image
        txt = pe.narrow(dim, 0 if self.layout.text_first else total, text)
        return torch.cat([txt, image] if self.layout.text_first else [image, txt], dim=dim)

    def after_blocks(self, run: RunState, ctx: StepContext, call: BlockCall, out: dict) -> dict:
        if self.config.sequence_ranks <= 1:
            return out
        split = self.run_data(run)
        key = self.layout.image_key
        stream = out[key]
        local = split.sizes[comm.group().rank]
        text = stream.shape[1] - local
        if text == 0:
            full = comm.gather_along(stream.contiguous(), 1, split.sizes)
        else:
            txt, image = self._split_text(stream, text, dim=1)
            full = self._join_text(txt, comm.gather_along(image.contiguous(), 1, split.sizes), dim=1)
        return {**out, key: full}

    # ---- attention ------------------------------------------------------------------------------------------
    def around_attention(self, run: RunState, ctx: StepContext, call: AttentionCall,
                         run_attention: RunAttention) -> torch.Tensor:
        if self.config.sequence_ranks <= 1:
            return run_attention(call)
        split = self.run_data(run)
        local = split.sizes[comm.group().rank] if split.sizes else -1
        tokens = call.q.shape[2]
        if self.layout.cross_onto_image and split.active and call.k.shape[2] == local != tokens:
            # Other tokens (kept whole) attending to the image: they need every rank's image keys and values.
            if call.mask is not None:
                raise comm.ParallelError("this model masks an attention onto a rank's image tokens; sequence "
                                         "parallelism cannot extend that mask to every rank's tokens yet")
            split.modes["cross"] = split.modes.get("cross", 0) + 1
            return self._kv_gather(call, split, 0, run_attention)
        # Joint text + image self-attention, or image-only self-attention (SD3.5's second call); anything else
        # (cross-attention onto the text, refiners outside the block loop) runs locally.
        if not split.active or call.k.shape[2] != tokens or tokens not in (split.text + local, local):
            return run_attention(call)
        text = tokens - local
        if call.mask is not None and call.mask.shape[-1] == tokens:
            raise comm.ParallelError("this model passes an attention mask over a rank's own tokens (a padded text "
                                     "mask); sequence parallelism cannot extend it to every rank's tokens yet. Use "
                                     "a prompt without padding, or one device")
        mode = self.config.mode_for(call.heads)
        split.modes[mode] = split.modes.get(mode, 0) + 1
        if mode == "ring":
            return self._kv_gather(call, split, text, run_attention)
        return self._ulysses(call, split, text, run_attention)

    def _split_text(self, t: torch.Tensor, text: int, dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        if self.layout.text_first:
            return t.narrow(dim, 0, text), t.narrow(dim, text, t.shape[dim] - text)
        return t.narrow(dim, t.shape[dim] - text, text), t.narrow(dim, 0, t.shape[dim] - text)

    def _join_text(self, text: torch.Tensor, image: torch.Tensor, dim: int = 2) -> torch.Tensor:
        if text.shape[dim] == 0:
            return image
        return torch.cat([text, image] if self.layout.text_first else [image, text], dim=dim)

    def _ulysses(self, call: AttentionCall, split: _CallSplit, text_len: int,
                 run_attention: RunAttention) -> torch.Tensor:
        group = comm.group()
        rank, world = group.rank, group.world
        heads = comm.even_split(call.heads, world)
        h0 = [sum(heads[:r]) for r in range(world)]
        qkv = torch.stack([call.q, call.k, call.v])                     # (3, B, H, T + l, D)
        text, image = self._split_text(qkv, text_len, dim=3)
        b, d = call.q.shape[0], call.q.shape[-1]
        # Sequence split -> head split: rank r receives every rank's tokens of its own head group.
        received = comm.exchange([image[:, :, h0[r]:h0[r] + heads[r]] for r in range(world)],
                                 [(3, b, heads[rank], n, d) for n in split.sizes])
        full = self._join_text(text[:, :, h0[rank]:h0[rank] + heads[rank]], torch.cat(received, dim=3), dim=3)
        q, k, v = full.unbind(0)
        out = run_attention(dataclasses.replace(call, q=q, k=k, v=v, head_offset=call.head_offset + h0[rank],
                                                model_heads=call.all_heads))  # (B, H/P, T + L, D)
        out_text, out_image = self._split_text(out, text_len)
        # Head split -> sequence split; the text rows' heads go to every rank (each keeps the whole text stream).
        offsets = [sum(split.sizes[:r]) for r in range(world)]
        local = split.sizes[rank]
        chunks = [torch.cat([out_image[:, :, offsets[r]:offsets[r] + split.sizes[r]].reshape(-1),
                             out_text.reshape(-1)]) for r in range(world)]
        back = comm.exchange(chunks, [((heads[r] * b * (local + text_len) * d),) for r in range(world)])
        image_parts, text_parts = [], []
        for r, flat in enumerate(back):
            n_image = b * heads[r] * local * d
            image_parts.append(flat[:n_image].view(b, heads[r], local, d))
            text_parts.append(flat[n_image:].view(b, heads[r], text_len, d))
        return self._join_text(torch.cat(text_parts, dim=1), torch.cat(image_parts, dim=1))

    def _kv_gather(self, call: AttentionCall, split: _CallSplit, text_len: int,
                   run_attention: RunAttention) -> torch.Tensor:
        kv = torch.stack([call.k, call.v])                              # (2, B, H, T + l, D)
        text, image = self._split_text(kv, text_len, dim=3)
        full = self._join_text(text, comm.gather_along(image.contiguous(), 3, split.sizes), dim=3)
        k, v = full.unbind(0)
        return run_attention(dataclasses.replace(call, k=k, v=v))
