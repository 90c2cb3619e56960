"""Multi-GPU sampling: Ulysses sequence parallelism over torch.distributed (NCCL on CUDA, gloo on CPU).

`comm` holds the collectives and the process group; `ulysses` the patch that splits the image tokens across ranks
and swaps the split around attention; `pool` (rank 0) and `worker` (ranks 1..P-1) the processes; `cost` the paper
model of `docs/multi_gpu.md`.
"""
