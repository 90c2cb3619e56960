"""The sequence split's bookkeeping for block args that run over the tokens (no processes): token ranges remapped onto
a rank's stream must select, on each rank, exactly the tokens the one-process ranges select, and per-token rows must
follow the image shard."""
import pytest
import torch

from dit_accel.accel.adapters.base import SequenceLayout
from dit_accel.accel.parallel.comm import ParallelError, even_split
from dit_accel.accel.parallel.ulysses import (SequenceParallelConfig, SequenceParallelPatch, _local_rows,
                                              local_ranges)


def _apply(ranges, n):
    """What apply_mod-like code does with ranges: each token gets the rows of every range covering it, in order."""
    rows = [[] for _ in range(n)]
    for a, b, *rest in ranges:
        for i in range(a, n if b is None else min(b, n)):
            rows[i].append(tuple(rest))
    return rows


@pytest.mark.parametrize("text_first", [True, False])
@pytest.mark.parametrize("joint", [True, False])
@pytest.mark.parametrize("ranges", [
    [(0, 16, 0), (16, None, 1)],          # HunyuanVideo I2V: first frame row 0, the rest row 1
    [(0, 5, 0), (3, 9, 1), (20, 40, 0)],  # overlapping, and past the end
    [(7, 8)],                             # Lumina's timestep_zero_index: (start, end) only
])
def test_remapped_ranges_select_the_same_tokens_on_every_rank(ranges, joint, text_first):
    images, text, world = 29, 5 if joint else 0, 3
    patch = SequenceParallelPatch(SequenceParallelConfig(world), SequenceLayout(text_first=text_first,
                                                                                joint_kinds=("single",)))
    full_rows = _apply(ranges, images + text)
    # The one-process stream's token positions, then each rank's stream as positions into it.
    image_pos = list(range(text, text + images)) if text_first else list(range(images))
    text_pos = list(range(text)) if text_first else list(range(images, images + text))
    sizes, seen = even_split(images, world), []
    for rank in range(world):
        start, local = sum(sizes[:rank]), sizes[rank]
        shard = image_pos[start:start + local]
        stream = (text_pos + shard if text_first else shard + text_pos) if joint else shard
        pieces = patch._pieces(joint, start, local, images, text)
        local_rows = _apply(local_ranges(ranges, pieces), len(stream))
        assert local_rows == [full_rows[p] for p in stream]
        seen += shard
    assert sorted(seen) == image_pos


def test_per_token_rows_follow_the_shard_and_broadcast_rows_stay_whole():
    rows = torch.arange(2 * 10 * 3).view(2, 10, 3)
    assert torch.equal(_local_rows("vec", rows, 6, 4, 10), rows[:, 6:10])
    one = torch.ones(2, 1, 3)
    assert _local_rows("vec", one, 6, 4, 10) is one
    with pytest.raises(ParallelError, match="'vec' has 7 rows on dim 1 for 10 image tokens"):
        _local_rows("vec", torch.ones(2, 7, 3), 6, 4, 10)
