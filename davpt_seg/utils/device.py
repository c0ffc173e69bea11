# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Host-to-device copies that do not stall the host."""
import torch


def to_device_async(tensor: torch.Tensor,
                    device: torch.device) -> torch.Tensor:
    """``tensor`` (on the CPU) on ``device`` without a host sync.

    A plain ``.to('cuda')`` of pageable memory makes the host wait for the
    copy, and so for all work queued before it; from pinned memory with
    ``non_blocking=True`` the copy is queued like a kernel. Other devices
    (and CPU tensors already there) get a plain ``.to``.
    """
    device = torch.device(device)
    if device.type == 'cuda' and tensor.device.type == 'cpu':
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
