import torch

from foveate.profiling import peak_memory

MB = 1024 * 1024


def test_counts_a_tensor_allocated_inside():
    def fn():
        a = torch.ones(2 * MB)  # 8 MB of float32
        return a.sum()

    peak = peak_memory(fn)
    assert 8 * MB <= peak < 9 * MB


def test_freed_memory_is_not_counted_twice():
    def sequential():
        for _ in range(3):
            a = torch.ones(2 * MB)
            del a

    def overlapping():
        kept = [torch.ones(2 * MB) for _ in range(3)]
        return len(kept)

    assert 8 * MB <= peak_memory(sequential) < 9 * MB
    assert 24 * MB <= peak_memory(overlapping) < 25 * MB


def test_temporaries_inside_one_op_and_memory_from_before():
    before = torch.ones(4 * MB)  # allocated before measuring: not part of the peak

    def fn():
        return (before * 2).sum()  # one 16 MB temporary, freed before returning

    assert 16 * MB <= peak_memory(fn) < 17 * MB
