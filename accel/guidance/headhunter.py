"""HeadHunter: greedily build the set of attention heads whose perturbation best serves an objective.

"Fine-Grained Perturbation Guidance via Attention Head Selection" (Ahn et al., 2025): each round scores the current
set plus one more candidate head, for every remaining head, and keeps the best addition; the search stops when no
addition improves the objective, at `max_heads`, or when the evaluation budget is spent. Scoring one set means
sampling with SoftPAG on it, so the budget counts samplings. Alongside, `layer_scores` scores each whole layer
(layer-level PAG) under the same objective, the baseline a head set has to beat.

Run on the bundled reference model (saves a named preset):
    python -m dit_accel.accel.guidance.headhunter --objective fd --name reference-digits
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from .heads import ALL_HEADS, HeadPair, format_heads, normalise

Objective = Callable[[tuple[HeadPair, ...]], float]   # head set -> score, higher is better


@dataclass(frozen=True)
class HuntConfig:
    max_heads: int = 3         # stop after this many heads
    budget: int = 40           # at most this many objective evaluations (samplings), the empty set included
    min_gain: float = 0.0      # an addition must raise the score by more than this

    def __post_init__(self):
        if self.max_heads < 1 or self.budget < 2 or self.min_gain < 0:
            raise ValueError("need max_heads >= 1, budget >= 2 and min_gain >= 0")


@dataclass
class HuntRound:
    added: HeadPair
    score: float
    scores: dict[str, float]   # "layer:head" -> score of the set with that head added


@dataclass
class HuntResult:
    heads: tuple[HeadPair, ...]
    score: float
    baseline: float                    # the empty set: no perturbation guidance
    rounds: list[HuntRound] = field(default_factory=list)
    evaluations: int = 0
    stopped: str = ""                  # why the search ended

    def to_json(self) -> dict:
        return {"heads": [list(p) for p in self.heads], "score": self.score, "baseline": self.baseline,
                "evaluations": self.evaluations, "stopped": self.stopped,
                "rounds": [{"added": list(r.added), "score": r.score, "scores": r.scores} for r in self.rounds]}


def hunt(candidates: list[HeadPair], objective: Objective, config: HuntConfig = HuntConfig(),
         progress: bool = True, baseline: float | None = None) -> HuntResult:
    """Greedy forward selection of heads from `candidates` under `objective` (see the module docstring)."""
    from tqdm.auto import tqdm
    remaining = list(normalise(candidates))
    bar = tqdm(total=config.budget, desc="HeadHunter", unit="eval", disable=not progress)
    used = 0

    def evaluate(heads) -> float:
        nonlocal used
        used += 1
        bar.update()
        return objective(normalise(heads))

    try:
        best = baseline if baseline is not None else evaluate(())
        result = HuntResult((), best, best)
        while True:
            if len(result.heads) >= config.max_heads:
                result.stopped = f"reached max_heads {config.max_heads}"
                break
            if not remaining:
                result.stopped = "no candidates left"
                break
            if used >= config.budget:
                result.stopped = f"evaluation budget {config.budget} spent"
                break
            scores: dict[HeadPair, float] = {}
            for head in remaining:
                if used >= config.budget:
                    break
                scores[head] = evaluate(result.heads + (head,))
                bar.set_postfix_str(f"round {len(result.rounds) + 1}: best {max(scores.values()):.4g} "
                                    f"(now {best:.4g})")
            head, score = max(scores.items(), key=lambda kv: kv[1])
            # Next round tries the heads that did best in this one first, so a budget cut drops the weakest.
            remaining.sort(key=lambda h: -scores.get(h, float("-inf")))
            if score <= best + config.min_gain:
                result.stopped = f"no remaining head improved the score (best addition {format_heads([head])}: " \
                                 f"{score:.4g} vs {best:.4g})"
                break
            best = score
            remaining.remove(head)
            result.rounds.append(HuntRound(head, score, {format_heads([h]): s for h, s in scores.items()}))
            result.heads, result.score = normalise(result.heads + (head,)), score
    finally:
        bar.close()
    result.evaluations = used
    return result


def layer_scores(layers: int, objective: Objective, progress: bool = True) -> dict[int, float]:
    """Each whole layer perturbed alone (layer-level PAG), scored by the same objective."""
    from tqdm.auto import tqdm
    return {layer: objective(((layer, ALL_HEADS),))
            for layer in tqdm(range(layers), desc="layer-level PAG", unit="eval", disable=not progress)}


REFERENCE_MODEL = "dit-accel reference digits DiT (Wan 2.1 format, 8 blocks x 2 heads)"


def hunt_reference(objective: str = "fd", guidance=None, seeds: int = 1, steps: int = 8,
                   config: HuntConfig = HuntConfig(), score_layers: bool = True,
                   given_layer_scores: dict[int, float] | None = None, progress: bool = True) -> dict:
    """HeadHunter on the bundled reference model: every (layer, head) a candidate, SoftPAG with `guidance`'s
    settings, `objective` from `reference_objective`. Returns the search record (what `--json` writes); its
    "found" entry holds the heads, and `preset_from_record` turns it into a preset. `given_layer_scores` (a
    `--layers-only` run with the same settings) replaces scoring each layer again."""
    from ..adapters.registry import adapter_for
    from .reference_objective import ReferenceObjective
    from .softpag import SoftPAGConfig

    guidance = guidance if guidance is not None else SoftPAGConfig(end_percent=0.6)
    scorer = ReferenceObjective(objective, guidance, seeds=seeds, steps=steps)
    model = scorer.model
    adapter = adapter_for(model)
    layers, per_layer = len(adapter.block_layout(model)), adapter.heads_per_layer(model)
    started = time.time()
    baseline = scorer(())
    result = hunt([(l, h) for l in range(layers) for h in range(per_layer)], scorer, config, progress=progress,
                  baseline=baseline)
    if given_layer_scores is not None:
        per_layer_scores = dict(given_layer_scores)
    else:
        per_layer_scores = layer_scores(layers, scorer, progress=progress) if score_layers else {}
    record = {"objective": objective, "score_is": SCORE_IS[objective], "settings": asdict(guidance),
              "search": {"seeds": seeds, "steps": steps, "seed_offset": scorer.seed_offset,
                         "budget": config.budget, "max_heads": config.max_heads},
              "model": {"family": adapter.name, "layers": layers, "heads_per_layer": per_layer},
              "found": result.to_json(), "layer_scores": {str(k): v for k, v in per_layer_scores.items()},
              "seconds": round(time.time() - started, 1)}
    if per_layer_scores:
        best = max(per_layer_scores, key=per_layer_scores.get)
        record["best_single_layer"] = {"layer": best, "score": per_layer_scores[best]}
    return record


SCORE_IS = {"fd": "minus the Fréchet distance", "confidence": "mean probability of the requested digit"}


def found_heads(record: dict) -> tuple[HeadPair, ...]:
    return normalise(tuple(p) for p in record["found"]["heads"])


def preset_from_record(record: dict, name: str, command: str):
    """The found heads of a `hunt_reference` record as a preset named `name`, citing `command` as its source."""
    from .presets import HeadPreset
    extra = {"objective": record["objective"], "score_is": record["score_is"], "search": record["search"],
             "no_guidance_score": record["found"]["baseline"], "score": record["found"]["score"],
             "rounds": record["found"]["rounds"], "layer_scores": record["layer_scores"]}
    if "best_single_layer" in record:
        extra["best_single_layer"] = record["best_single_layer"]
    settings = {k: record["settings"][k] for k in ("scale", "alpha", "start_percent", "end_percent")}
    shape = record["model"]
    return HeadPreset(name, shape["family"], shape["layers"], shape["heads_per_layer"], found_heads(record),
                      source=f"found by HeadHunter on the bundled reference model: {command}",
                      model=REFERENCE_MODEL, settings=settings, extra=extra)


def main(argv: list[str] | None = None) -> int:
    from .presets import PRESET_DIR, save_preset
    from .reference_objective import OBJECTIVES, ReferenceObjective
    from .softpag import SoftPAGConfig

    parser = argparse.ArgumentParser(prog="python -m dit_accel.accel.guidance.headhunter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objective", choices=OBJECTIVES, default="fd",
                        help="fd: Fréchet distance to held-out real digits (lower is better); confidence: the "
                             "classifier's probability of the requested digit")
    parser.add_argument("--budget", type=int, default=HuntConfig.budget, help="objective evaluations (samplings)")
    parser.add_argument("--max-heads", type=int, default=HuntConfig.max_heads)
    parser.add_argument("--seeds", type=int, default=1, help="noise seeds per evaluation (10 digits each)")
    parser.add_argument("--steps", type=int, default=8, help="sampling steps per evaluation")
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--start-percent", type=float, default=0.0)
    parser.add_argument("--end-percent", type=float, default=0.6)
    parser.add_argument("--no-layers", action="store_true", help="skip the layer-level comparison")
    parser.add_argument("--layers-only", action="store_true",
                        help="only score each whole layer (write them with --json, pass them on with --layer-scores)")
    parser.add_argument("--layer-scores", default="",
                        help="a --layers-only record (same settings) to use instead of scoring the layers again")
    parser.add_argument("--name", default="", help="save the found set as this preset (accel/guidance/presets/)")
    parser.add_argument("--json", default="", help="write the whole search record here")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    guidance = SoftPAGConfig(scale=args.scale, alpha=args.alpha, start_percent=args.start_percent,
                             end_percent=args.end_percent)
    if args.layers_only:
        from ..adapters.registry import adapter_for
        scorer = ReferenceObjective(args.objective, guidance, seeds=args.seeds, steps=args.steps)
        baseline = scorer(())
        scores = layer_scores(len(adapter_for(scorer.model).block_layout(scorer.model)), scorer)
        print(f"no guidance {baseline:.4g}; " + ", ".join(f"layer {k}: {v:.4g}" for k, v in scores.items()))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"objective": args.objective, "settings": asdict(guidance), "baseline": baseline,
                           "layer_scores": {str(k): v for k, v in scores.items()}}, f, indent=2)
        return 0
    given = None
    if args.layer_scores:
        with open(args.layer_scores) as f:
            record = json.load(f)
        if record["settings"] != json.loads(json.dumps(asdict(guidance))) or record["objective"] != args.objective:
            raise SystemExit(f"{args.layer_scores} was measured with other settings or another objective")
        given = {int(k): v for k, v in record["layer_scores"].items()}
    record = hunt_reference(args.objective, guidance, args.seeds, args.steps, HuntConfig(args.max_heads, args.budget),
                            score_layers=not args.no_layers, given_layer_scores=given)
    found = record["found"]
    print(f"HeadHunter ({args.objective}): no guidance {found['baseline']:.4g}; found "
          f"{format_heads(found_heads(record)) or 'none'} -> {found['score']:.4g} in {found['evaluations']} "
          f"evaluations ({found['stopped']})")
    if "best_single_layer" in record:
        best = record["best_single_layer"]
        verdict = "beats" if found["score"] > best["score"] else "does not beat"
        print(f"best single full layer: {best['layer']} -> {best['score']:.4g}; the head set {verdict} it")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    if args.name and found["heads"]:
        command = "python -m dit_accel.accel.guidance.headhunter " + _command_line(argv or [])
        path = save_preset(preset_from_record(record, args.name, command), PRESET_DIR)
        print(f"saved preset {args.name!r} to {path}")
    elif args.name:
        print("nothing saved: no head improved the objective")
    return 0


def _command_line(argv: list[str]) -> str:
    """The command to cite in a preset: a --layer-scores file (a temporary record) becomes a note on how it was made."""
    out, notes, skip = [], "", False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg in ("--layer-scores", "--json"):
            skip = True
            if arg == "--layer-scores":
                notes = " (layer scores from a run of the same command with --layers-only)"
        else:
            out.append(arg)
    return " ".join(out) + notes


if __name__ == "__main__":
    import sys
    raise SystemExit(main(sys.argv[1:]))
