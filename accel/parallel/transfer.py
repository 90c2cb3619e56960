"""How a model replica reaches the workers: its structure through the command pipe, its weights by broadcast.

The module is pickled with every tensor replaced by a (shape, dtype) stub, so the pipe carries kilobytes; the worker
allocates the stubs, rank 0 broadcasts their values over the process group (NVLink/PCIe with NCCL), and then the
worker unpickles the module around them.
Quantized weights (tensor subclasses) travel as their inner tensors, rebuilt with `__tensor_unflatten__`.
"""
from __future__ import annotations

import io
import pickle

import cloudpickle
import torch
import torch.distributed as dist

_PLAIN = (torch.Tensor, torch.nn.Parameter)


class _StubPickler(cloudpickle.Pickler):
    # cloudpickle: ComfyUI builds some layer classes inside functions (mixed-precision ops for quantized weights),
    # which plain pickle cannot name; cloudpickle sends those classes by value and everything importable by name.
    def __init__(self, file, tensors: list[torch.Tensor]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors = tensors
        self.ids: dict[int, int] = {}

    def persistent_id(self, obj):
        if not isinstance(obj, torch.Tensor):
            return None
        if type(obj) not in _PLAIN:
            return self._subclass(obj)
        return self._stub(obj)

    def _subclass(self, obj: torch.Tensor):
        # A quantized weight (comfy-kitchen's QuantizedTensor, our TLQ layout on it) is a wrapper subclass: it is
        # sent as its inner tensors (stubbed and broadcast like any weight) plus the context that rebuilds it, by
        # torch's own subclass protocol.
        if not hasattr(obj, "__tensor_flatten__") or not hasattr(type(obj), "__tensor_unflatten__"):
            raise TypeError(f"multi-GPU cannot send a {type(obj).__name__} weight to the workers: it is a tensor "
                            "subclass without __tensor_flatten__; use a model with plain or comfy-kitchen weights")
        key = self.ids.get(id(obj))
        if key is not None:
            return ("subclass-ref", key)
        names, ctx = obj.__tensor_flatten__()
        inner = {name: self._stub(getattr(obj, name)) for name in names}
        key = self.ids[id(obj)] = -1 - len(self.ids)  # negative: never a plain tensor's index
        return ("subclass", key, type(obj), inner, ctx, tuple(obj.shape), tuple(obj.stride()),
                isinstance(obj, torch.nn.Parameter))

    def _stub(self, obj: torch.Tensor):
        if type(obj) not in _PLAIN:
            raise TypeError(f"multi-GPU cannot send a nested {type(obj).__name__} to the workers")
        index = self.ids.get(id(obj))
        if index is None:  # tied weights stay tied: one stub, one broadcast
            index = self.ids[id(obj)] = len(self.tensors)
            self.tensors.append(obj)
        return ("tensor", index, tuple(obj.shape), obj.dtype, isinstance(obj, torch.nn.Parameter),
                obj.requires_grad)


class _StubUnpickler(pickle.Unpickler):
    def __init__(self, file, filled: list[torch.Tensor]):
        super().__init__(file)
        self.filled = filled  # the stubs' values, already received: a subclass may copy its inner tensors
        self.tensors: dict[int, torch.Tensor] = {}
        self.subclasses: dict[int, torch.Tensor] = {}

    def persistent_load(self, pid):
        if pid[0] == "subclass-ref":
            return self.subclasses[pid[1]]
        if pid[0] == "subclass":
            _, key, cls, inner, ctx, size, stride, is_param = pid
            value = cls.__tensor_unflatten__({n: self.persistent_load(stub) for n, stub in inner.items()}, ctx,
                                             size, stride)
            self.subclasses[key] = torch.nn.Parameter(value, requires_grad=False) if is_param else value
            return self.subclasses[key]
        _, index, shape, dtype, is_param, requires_grad = pid
        if index not in self.tensors:
            t = self.filled[index]
            self.tensors[index] = torch.nn.Parameter(t, requires_grad=requires_grad) if is_param else t
        return self.tensors[index]


def skeleton_of(model: torch.nn.Module) -> tuple[bytes, list[torch.Tensor]]:
    """(the module pickled without its tensors' values, those tensors in stub order)."""
    tensors: list[torch.Tensor] = []
    buf = io.BytesIO()
    _StubPickler(buf, tensors).dump(model)
    return buf.getvalue(), tensors


def specs_of(tensors: list[torch.Tensor]) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """What a worker needs to allocate the stubs before their values arrive."""
    return [(tuple(t.shape), t.dtype) for t in tensors]


def allocate(specs: list[tuple[tuple[int, ...], torch.dtype]], device: torch.device) -> list[torch.Tensor]:
    return [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in specs]


def rebuild(skeleton: bytes, filled: list[torch.Tensor]) -> torch.nn.Module:
    """The module back from its skeleton, around tensors that already hold rank 0's values (`broadcast_tensors`)."""
    return _StubUnpickler(io.BytesIO(skeleton), filled).load()


@torch.no_grad()
def broadcast_tensors(tensors: list[torch.Tensor], device: torch.device) -> None:
    """Rank 0's values into every rank's tensors of the same stub order (rank 0 sends from a staging copy when its
    weights live elsewhere, e.g. offloaded to the CPU while the ranks use CUDA)."""
    for t in tensors:
        data = t.detach()
        staged = data if data.device == device else data.to(device)
        dist.broadcast(_on_the_wire(staged), src=0)
        if staged is not data:
            data.copy_(staged)


def _on_the_wire(t: torch.Tensor) -> torch.Tensor:
    # gloo has no float8 type (ComfyUI's fp8 weights): the same bytes travel as uint8.
    return t.view(torch.uint8) if t.element_size() == 1 and t.dtype.is_floating_point else t
