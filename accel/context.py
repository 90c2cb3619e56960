"""The step context: where the sampler is and which batch rows belong to which conditioning stream.

Built in one place, `StepContext.from_transformer_options`, from the keys ComfyUI's sampler writes into
`transformer_options` for every batched model call (`sigmas`, `sample_sigmas`, `cond_or_uncond`, `uuids`); our own
reference sampler writes the same keys, and tests may build a context directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

COND, UNCOND = 0, 1  # ComfyUI's cond_or_uncond codes
STREAM_KINDS = {COND: "cond", UNCOND: "uncond"}
# Set in a call's transformer_options by a method's extra model call of a step (perturbation guidance's perturbed
# pass): its streams get keys of their own, so per-stream state (block cache, ...) never mixes it with the main pass.
BRANCH_KEY = "dit_accel_branch"


@dataclass(frozen=True)
class Stream:
    """One conditioning stream inside a batched call: its kind, a key stable over the run, and its batch rows."""

    kind: str
    key: str
    rows: slice
    source_key: str | None = None  # in a branch call: the key of the main-pass stream this one branches from


@dataclass(frozen=True)
class StepContext:
    step: int            # index of this sigma in the schedule; -1 when the schedule is unknown
    total_steps: int     # number of denoising steps in the schedule; 0 when unknown
    sigma: float
    streams: tuple[Stream, ...]
    batch_size: int
    next_sigma: float = float("nan")  # the sigma this step moves to; nan when the schedule is unknown
    branch: str | None = None         # the BRANCH_KEY of an extra call of the step; None for the main pass
    schedule: tuple[float, ...] = ()  # the whole sigma schedule (steps + 1 values, ending at the last sigma); () unknown

    @property
    def step_weight(self) -> float:
        """This step's share of the schedule's sigma drop, relative to an even split (1.0 = an average step).

        A model-output error at step i moves the sample by about error × (sigma_i - sigma_i+1), so an error at a
        big step costs more: gates use this to spend their skipping where it is cheap.
        """
        if self.total_steps <= 0 or self.next_sigma != self.next_sigma:
            return 1.0
        return abs(self.sigma - self.next_sigma) * self.total_steps

    @property
    def percent(self) -> float:
        """Fraction of the schedule already done: 0 at the first step, approaching 1 at the last."""
        if self.total_steps <= 0 or self.step < 0:
            return 0.0
        return self.step / self.total_steps

    @property
    def is_first_step(self) -> bool:
        return self.step == 0

    @property
    def is_last_step(self) -> bool:
        return self.total_steps > 0 and self.step == self.total_steps - 1

    def stream(self, key: str) -> Stream:
        for s in self.streams:
            if s.key == key:
                return s
        raise KeyError(key)

    @classmethod
    def from_transformer_options(cls, transformer_options: dict, batch_size: int) -> "StepContext":
        sigmas = transformer_options.get("sigmas")
        sigma = float(sigmas.reshape(-1)[0]) if isinstance(sigmas, torch.Tensor) and sigmas.numel() else float("nan")
        schedule = transformer_options.get("sample_sigmas")
        step, total = locate_step(sigma, schedule)
        sigmas_all = tuple(schedule.detach().cpu().tolist()) if total else ()
        next_sigma = sigmas_all[step + 1] if total else float("nan")
        streams = split_streams(transformer_options.get("cond_or_uncond"), transformer_options.get("uuids"),
                                batch_size)
        branch = transformer_options.get(BRANCH_KEY) or None
        if branch is not None:
            streams = tuple(Stream(s.kind, f"{s.key}#{branch}", s.rows, s.key) for s in streams)
        return cls(step=step, total_steps=total, sigma=sigma, streams=streams, batch_size=batch_size,
                   next_sigma=next_sigma, branch=branch, schedule=sigmas_all)

    @classmethod
    def single(cls, step: int, total_steps: int, sigma: float, batch_size: int, kind: str = "cond") -> "StepContext":
        """A context with one stream covering the whole batch (tests, single-conditioning runs)."""
        return cls(step, total_steps, sigma, (Stream(kind, kind, slice(0, batch_size)),), batch_size)


def locate_step(sigma: float, sample_sigmas) -> tuple[int, int]:
    """(step index, number of steps) of `sigma` in the schedule; (-1, 0) when there is no schedule."""
    if not isinstance(sample_sigmas, torch.Tensor) or sample_sigmas.numel() < 2 or sigma != sigma:
        return -1, 0
    schedule = sample_sigmas.detach().float().cpu()
    total = len(schedule) - 1
    # The closest sigma, not an exact match: the sampler may hand the model a sigma cast to another dtype.
    step = int(torch.argmin((schedule[:total] - sigma).abs()))
    return step, total


def split_streams(cond_or_uncond, uuids, batch_size: int) -> tuple[Stream, ...]:
    """Rows per stream: ComfyUI stacks one equal-sized chunk per entry of `cond_or_uncond`, in list order."""
    if not cond_or_uncond:
        return (Stream("cond", "cond", slice(0, batch_size)),)
    n = len(cond_or_uncond)
    if batch_size % n:
        raise ValueError(f"batch of {batch_size} rows cannot be split into {n} conditioning chunks")
    per = batch_size // n
    streams = []
    for i, code in enumerate(cond_or_uncond):
        kind = STREAM_KINDS.get(int(code), f"stream{int(code)}")
        key = str(uuids[i]) if uuids is not None and i < len(uuids) else f"{kind}{i}"
        streams.append(Stream(kind, key, slice(i * per, (i + 1) * per)))
    return tuple(streams)
