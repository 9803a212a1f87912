"""Benchmarking any foveate model: accuracy, FLOPs, latency, peak memory and full-resolution pixels
read, per model and budget, on one test split -- and the Markdown/JSON report of it.

    from foveate.bench import Entry, Settings, markdown, run_benchmark, write_results

    results = run_benchmark([Entry("tnet", "runs/tnet/checkpoints/best.ckpt")], data_cfg, Settings())
    write_results("runs/bench", results, markdown(results, "TNet on Megapixel MNIST"))

measure.py holds the single measurements (usable on an in-memory model), memory.py the
fresh-process memory probe, engine.py the run over checkpoints, report.py table and files
(JSON, Markdown, CSV), plots.py the PNG plots. compare.py is `foveate bench` (checkpoints of
one task, a data config or a folder of images -- folder.py), scaling.py `foveate bench --scaling`
(cost against image side for the same content). The footnotes under every table say exactly
how every column is measured.
"""
from .compare import compare
from .engine import Entry, Settings, progress, run_benchmark, test_data, test_split
from .folder import LabeledImageFolder
from .measure import (
    Budget,
    accuracy,
    budget_name,
    check_budget,
    flops,
    latency,
    measure_budget,
    median_iqr_ms,
    parse_budget,
    pixels_read,
)
from .memory import peak_memory
from .report import footnotes, markdown, save_report, write_results
from .scaling import ScalingSettings, scaling

__all__ = ["Budget", "Entry", "LabeledImageFolder", "ScalingSettings", "Settings", "accuracy", "budget_name",
           "check_budget", "compare", "flops", "footnotes", "latency", "markdown", "measure_budget", "median_iqr_ms",
           "parse_budget", "peak_memory", "pixels_read", "progress", "run_benchmark", "save_report", "scaling",
           "test_data", "test_split", "write_results"]
