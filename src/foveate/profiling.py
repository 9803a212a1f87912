"""Peak memory of a piece of work, on CUDA or CPU, measured exactly rather than from RSS.

RSS-based numbers on CPU are dominated by allocator caching and page reuse, so they cannot show
whether a model's memory grows with the image; these count PyTorch's own tensor allocations.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def peak_memory(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Peak bytes allocated by PyTorch while `fn()` runs, above the level when it started.

    CUDA: `torch.cuda.reset_peak_memory_stats` then `max_memory_allocated` minus the starting
    `memory_allocated` (the caching allocator's own accounting, exact).

    CPU: `torch.profiler.profile(profile_memory=True)` records one event per allocation and free
    made through PyTorch's CPU allocator (every tensor storage, including temporaries inside
    ops, e.g. a convolution's unfolded input); the peak is the maximum of the running sum of
    these events in time order. Two consequences: frees of blocks allocated before `fn` started
    are not reported by the profiler, so they never lower the level (the result can only
    over-estimate); and memory a library allocates outside PyTorch's allocator (e.g. oneDNN
    scratch space) is not counted. Profiling slows `fn` down by a few microseconds per op.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - start)
    if device.type != "cpu":
        raise NotImplementedError(f"peak_memory supports cpu and cuda devices, not {device.type}")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # The kineto event list keeps every "[memory]" event; `prof.events()` folds most of them into
    # their ops' net usage, which would hide the peak reached inside an op.
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())  # stable: same-timestamp events keep their recorded order
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return peak
