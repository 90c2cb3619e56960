"""HeadHunter's greedy search on objectives whose best head sets are known."""
from __future__ import annotations

from dit_accel.accel.guidance.headhunter import HuntConfig, hunt, layer_scores

WEIGHTS = {(0, 0): 1.0, (0, 1): 2.0, (1, 0): 0.5, (1, 1): 3.0, (2, 0): -1.0, (2, 1): 0.0}
CANDIDATES = list(WEIGHTS)


def additive_with_overlap(heads) -> float:
    """Heads add their weight, except that 0:0 and 0:1 overlap (together they lose 2.5)."""
    score = sum(WEIGHTS[h] for h in heads if h[1] is not None)
    if (0, 0) in heads and (0, 1) in heads:
        score -= 2.5
    return score


def test_greedy_adds_the_best_head_each_round_and_stops_when_nothing_helps():
    calls = []

    def objective(heads):
        calls.append(heads)
        return additive_with_overlap(heads)

    result = hunt(CANDIDATES, objective, HuntConfig(max_heads=6, budget=100), progress=False)
    assert [r.added for r in result.rounds] == [(1, 1), (0, 1), (1, 0)]
    assert result.heads == ((0, 1), (1, 0), (1, 1)) and result.score == 5.5 and result.baseline == 0.0
    assert "no remaining head improved" in result.stopped
    assert result.evaluations == len(calls) == 1 + 6 + 5 + 4 + 3


def test_budget_and_max_heads_end_the_search():
    result = hunt(CANDIDATES, additive_with_overlap, HuntConfig(max_heads=6, budget=4), progress=False)
    assert result.evaluations == 4 and "budget" in result.stopped
    assert result.heads == ((0, 1),)  # the best of the three heads it could afford to try
    result = hunt(CANDIDATES, additive_with_overlap, HuntConfig(max_heads=1, budget=100), progress=False)
    assert result.heads == ((1, 1),) and "max_heads" in result.stopped


def test_nothing_is_added_when_no_head_beats_no_guidance():
    result = hunt(CANDIDATES, lambda heads: -len(heads), HuntConfig(), progress=False)
    assert result.heads == () and result.rounds == []


def test_layer_scores_perturb_each_whole_layer():
    seen = []
    scores = layer_scores(3, lambda heads: seen.append(heads) or heads[0][0] * 1.0, progress=False)
    assert seen == [((0, None),), ((1, None),), ((2, None),)] and scores == {0: 0.0, 1: 1.0, 2: 2.0}
