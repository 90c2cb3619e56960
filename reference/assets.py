"""Where the bundled weights live and how to load them."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .classifier import DigitClassifier
from .wan_dit import WanConfig, WanDiT

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_FILE = WEIGHTS_DIR / "dit_accel_reference_wan21.safetensors"
CLASSIFIER_FILE = WEIGHTS_DIR / "digit_classifier.safetensors"


def save_model(model: WanDiT, path: Path = MODEL_FILE, dtype: torch.dtype = torch.float16, info: dict | None = None):
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    metadata = {"dit_accel_config": json.dumps(model.cfg.to_dict()), "dit_accel_info": json.dumps(info or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)


def load_model(path: Path = MODEL_FILE, dtype: torch.dtype = torch.float32, device="cpu") -> WanDiT:
    if not Path(path).exists():
        raise FileNotFoundError(f"reference model weights not found at {path}; train them with "
                                "`python -m dit_accel.reference.train`")
    state = load_file(str(path))
    cfg = WanConfig(dim=state["head.modulation"].shape[-1], ffn_dim=state["blocks.0.ffn.0.weight"].shape[0],
                    num_layers=len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
                    in_dim=state["patch_embedding.weight"].shape[1], out_dim=state["head.head.weight"].shape[0] // 4,
                    text_dim=state["text_embedding.0.weight"].shape[1])
    model = WanDiT(cfg)
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def save_classifier(model: DigitClassifier, path: Path = CLASSIFIER_FILE):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}, str(path))


def load_classifier(path: Path = CLASSIFIER_FILE, device="cpu") -> DigitClassifier:
    if not Path(path).exists():
        raise FileNotFoundError(f"digit classifier weights not found at {path}; train them with "
                                "`python -m dit_accel.reference.train --classifier-only`")
    model = DigitClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval().requires_grad_(False)
