"""Moving model weights between processes over torch.distributed, bit for bit: a state dict travels as one
byte buffer (on the GPU under NCCL, on the CPU under gloo), sent point to point or broadcast."""

from __future__ import annotations

import torch
import torch.distributed as dist

State = dict[str, torch.Tensor]


def pack(state: State) -> torch.Tensor:
    """The tensors of `state`, in its order, as one flat uint8 CPU tensor (their raw bytes)."""
    parts = [t.detach().cpu().contiguous().reshape(-1).view(torch.uint8) for t in state.values()]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8)


def packed_size(template: State) -> int:
    """The bytes :func:`pack` makes of a state dict shaped like `template`."""
    return sum(t.numel() * t.element_size() for t in template.values())


def unpack(buffer: torch.Tensor, template: State) -> State:
    """The state dict packed into `buffer`, with the names, shapes and dtypes of `template`, on the CPU."""
    if buffer.numel() != packed_size(template):
        raise ValueError(f"buffer holds {buffer.numel()} bytes, the template's tensors {packed_size(template)}")
    buffer, state, offset = buffer.cpu(), {}, 0
    for name, like in template.items():
        size = like.numel() * like.element_size()
        state[name] = buffer[offset : offset + size].clone().view(like.dtype).reshape(like.shape)
        offset += size
    return state


def transport_device(device: torch.device) -> torch.device:
    """Where buffers must be for the process group's backend: the GPU under NCCL, else the CPU."""
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def send(state: State, dst: int, device: torch.device) -> tuple[dist.Work, torch.Tensor]:
    """Starts sending `state` to rank `dst` without waiting: (the request, the buffer to keep alive until it is
    waited on)."""
    buffer = pack(state).to(transport_device(device))
    return dist.isend(buffer, dst), buffer


def receive(template: State, src: int, device: torch.device) -> State:
    """The state dict rank `src` sends with :func:`send` (shaped like `template`), on the CPU."""
    buffer = torch.empty(packed_size(template), dtype=torch.uint8, device=transport_device(device))
    dist.recv(buffer, src)
    return unpack(buffer, template)


def broadcast(state: State | None, template: State, src: int, device: torch.device) -> State:
    """`state` of rank `src` on every rank (pass None elsewhere), shaped like `template`: rank `src` gets its own
    `state` back as given, the others a copy on the CPU."""
    if dist.get_rank() == src:
        if state is None:
            raise ValueError(f"broadcast: rank {src} is the source but has no state")
        buffer = pack(state).to(transport_device(device))
    else:
        buffer = torch.empty(packed_size(template), dtype=torch.uint8, device=transport_device(device))
    dist.broadcast(buffer, src)
    return state if dist.get_rank() == src else unpack(buffer, template)
