"""How a model replica reaches the workers: its structure through the command pipe, its weights by broadcast.

The module is pickled with every tensor replaced by a (shape, dtype) stub, so the pipe carries kilobytes; the worker
rebuilds it with empty tensors and rank 0 broadcasts the values over the process group (NVLink/PCIe with NCCL).
"""
from __future__ import annotations

import io
import pickle

import torch
import torch.distributed as dist

_PLAIN = (torch.Tensor, torch.nn.Parameter)


class _StubPickler(pickle.Pickler):
    def __init__(self, file, tensors: list[torch.Tensor]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors = tensors
        self.ids: dict[int, int] = {}

    def persistent_id(self, obj):
        if not isinstance(obj, torch.Tensor):
            return None
        if type(obj) not in _PLAIN:
            raise TypeError(f"multi-GPU cannot send a {type(obj).__name__} weight to the workers yet (quantized "
                            "tensor subclasses); use a model with plain weights")
        index = self.ids.get(id(obj))
        if index is None:  # tied weights stay tied: one stub, one broadcast
            index = self.ids[id(obj)] = len(self.tensors)
            self.tensors.append(obj)
        return ("tensor", index, tuple(obj.shape), obj.dtype, isinstance(obj, torch.nn.Parameter),
                obj.requires_grad)


class _StubUnpickler(pickle.Unpickler):
    def __init__(self, file, device: torch.device):
        super().__init__(file)
        self.device = device
        self.tensors: dict[int, torch.Tensor] = {}

    def persistent_load(self, pid):
        _, index, shape, dtype, is_param, requires_grad = pid
        if index not in self.tensors:
            t = torch.empty(shape, dtype=dtype, device=self.device)
            self.tensors[index] = torch.nn.Parameter(t, requires_grad=requires_grad) if is_param else t
        return self.tensors[index]


def skeleton_of(model: torch.nn.Module) -> tuple[bytes, list[torch.Tensor]]:
    """(the module pickled without its tensors' values, those tensors in stub order)."""
    tensors: list[torch.Tensor] = []
    buf = io.BytesIO()
    _StubPickler(buf, tensors).dump(model)
    return buf.getvalue(), tensors


def rebuild(skeleton: bytes, device: torch.device) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """The module back from its skeleton, with empty tensors on `device` (filled by `broadcast_tensors`)."""
    unpickler = _StubUnpickler(io.BytesIO(skeleton), device)
    model = unpickler.load()
    return model, [unpickler.tensors[i] for i in sorted(unpickler.tensors)]


@torch.no_grad()
def broadcast_tensors(tensors: list[torch.Tensor], device: torch.device) -> None:
    """Rank 0's values into every rank's tensors of the same stub order (rank 0 sends from a staging copy when its
    weights live elsewhere, e.g. offloaded to the CPU while the ranks use CUDA)."""
    for t in tensors:
        data = t.detach()
        staged = data if data.device == device else data.to(device)
        dist.broadcast(staged, src=0)
        if staged is not data:
            data.copy_(staged)
