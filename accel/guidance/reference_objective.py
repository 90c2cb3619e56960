"""HeadHunter's objectives on the bundled reference model: sample digits with SoftPAG on a head set, score them.

Objectives (higher is better, so the search maximises every one of them):
  * "fd": minus the Fréchet distance of the samples to held-out real digits in the bundled classifier's feature
    space (the bench's `fd_data`);
  * "confidence": the classifier's mean probability of the requested digit.
Samples use their own noise seeds (from `seed_offset`), apart from the bench's seeds 0.., so a head set is not tuned
on the noise it is later judged on.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..adapters.registry import adapter_for
from ..host import AccelHost
from ..standalone import accelerated
from .heads import HeadPair
from .softpag import SoftPAGConfig, SoftPAGPatch, branch_options, guide

OBJECTIVES = ("fd", "confidence")


def softpag_post_cfg(config: SoftPAGConfig) -> Callable[[dict], torch.Tensor]:
    """The reference sampler's post-CFG function: run the perturbed branch and add the guidance term."""
    from ...reference.sampling import FLOW_MULTIPLIER

    def post_cfg(args: dict) -> torch.Tensor:
        if not config.guides(args["step"] / args["steps"]):
            return args["denoised"]
        x, sigma = args["input"], args["sigma"]
        velocity = args["model"](x, sigma * FLOW_MULTIPLIER, args["context"],
                                 branch_options(args["transformer_options"]))
        perturbed = x - velocity * sigma.view(-1, *[1] * (x.dim() - 1))
        return guide(args["denoised"], args["cond_denoised"], perturbed, config.scale)

    return post_cfg


@dataclass
class ReferenceObjective:
    """`objective(heads) -> score` on the reference model; the model, classifier and real features load once."""

    objective: str = "fd"
    guidance: SoftPAGConfig = SoftPAGConfig()   # its heads are replaced by each evaluated set
    seeds: int = 2
    steps: int = 20
    cfg: float = 4.0
    seed_offset: int = 1000
    device: str = "cpu"
    evaluations: int = field(default=0, init=False)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        from ...reference.assets import load_classifier, load_model
        from ...reference.conditioning import UNCONDITIONAL, label_context
        from ...reference.digits import NUM_CLASSES, load_digits_split, upscale
        self.model = load_model(device=self.device)
        self.classifier = load_classifier(device=self.device)
        with torch.no_grad():
            self.real_features = self.classifier.features(upscale(load_digits_split()["test_images"]).to(self.device))
        self.labels = torch.arange(NUM_CLASSES)
        self.cond = label_context(self.labels, device=self.device)
        self.uncond = label_context([UNCONDITIONAL] * NUM_CLASSES, device=self.device)
        self.noise = [torch.randn(NUM_CLASSES, 16, 1, 32, 32, generator=torch.Generator().manual_seed(
            self.seed_offset + s)).to(self.device) for s in range(self.seeds)]

    def images(self, heads: tuple[HeadPair, ...]) -> torch.Tensor:
        from ...reference.latent import model_latents_to_images
        from ...reference.sampling import sample_euler_cfg, simple_schedule
        config = dataclasses.replace(self.guidance, heads=tuple(heads))
        host = AccelHost(adapter_for(self.model), (SoftPAGPatch(config),))
        sigmas = simple_schedule(self.steps)
        out = []
        for noise in self.noise:
            with accelerated(host, self.model) as (model_fn, _, _):
                latents = sample_euler_cfg(model_fn, noise, self.cond, self.uncond, sigmas, self.cfg,
                                           post_cfg=softpag_post_cfg(config))
            out.append(model_latents_to_images(latents))
        return torch.cat(out)

    def score_images(self, images: torch.Tensor) -> float:
        with torch.no_grad():
            if self.objective == "confidence":
                probs = self.classifier(images.to(self.device)).softmax(-1)
                labels = self.labels.repeat(len(images) // len(self.labels)).to(self.device)
                return float(probs.gather(1, labels[:, None]).mean())
            from ...bench.metrics import frechet_distance
            return -frechet_distance(self.classifier.features(images.to(self.device)), self.real_features)

    def __call__(self, heads: tuple[HeadPair, ...]) -> float:
        self.evaluations += 1
        return self.score_images(self.images(heads))
