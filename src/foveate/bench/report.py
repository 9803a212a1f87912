"""The benchmark's results as a Markdown table with footnotes, a CSV table, and the files written atomically."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..fileio import atomic_open

Results = dict[str, Any]  # {"header": ..., "rows": [...]} as run_benchmark returns it


def columns(results: Results) -> list[str]:
    batches = results["header"]["settings"]["batch_sizes"]
    return (["model", "locations", "test acc", "GFLOPs/img"]
            + [f"latency ms/img (batch {b}, median ± IQR)" for b in batches]
            + ["peak inference memory MiB", "allocator peak MiB", "full-res pixels read %"])


def row_cells(row: dict[str, Any], batches: list[int]) -> list[str]:
    latency = [row["latency_ms"][str(b)] for b in batches]
    memory = f"{row['memory']['added_mib']:.1f}" if row.get("memory") else "not measured"
    return ([row["model"], row["budget"], f"{row['test_acc']:.4f}", f"{row['gflops']:.3f}"]
            + [f"{t['median']:.1f} ± {t['iqr']:.1f}" for t in latency]
            + [memory, f"{row['allocator_peak_mib']:.1f}" if row.get("allocator_peak_mib") is not None else "-",
               f"{row['pixels_read_pct']:.2f}"])


def _describe_model(cfg: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("name", "num_classes"))


def training_line(model: dict[str, Any]) -> str:
    """What training did and where the evaluated checkpoint stands."""
    t, e = model.get("training"), model["evaluated_checkpoint"]
    if t:
        text = f"trained {t.get('minutes', 0):.1f} min wall clock in fit()"
        if t.get("steps") is not None:
            text += f", {t['steps']} steps"
        stages = t.get("stages") or []
        if len(stages) > 1:
            text += " (" + " then ".join(f"`{s['config']}` {s['minutes']:.1f} min, {s['steps']} steps"
                                         for s in stages) + ")"
        elif stages:
            text += f" (`{stages[0]['config']}`)"
    else:
        text = "not trained in this run (existing checkpoint)"
    return (f"{text}; evaluated checkpoint after {e['epochs_done']:.2f} epochs, {e['global_step']} steps "
            f"(epoch index {e['epoch']})")


def markdown(results: Results, title: str = "Benchmark") -> str:
    """The header (data, machine, every model and its training), the table (one row per model and
    budget) and the footnotes saying how each column is measured."""
    head, rows = results["header"], results["rows"]
    env = head["environment"]
    cols = columns(results)
    lines = [
        f"## {title}",
        "",
        data_line(head["data"]),
        (f"- torch {env['torch']}, {env['threads']} CPU threads ({env['cpu']}, {env['usable_cpus']} usable of "
         f"{env['logical_cpus']} logical CPUs), Python {env['python']}, {env['date']}"),
        (f"- other processes used up to {head['other_cpu_pct']:.0f}% of the CPUs during the latency runs "
         "(anything above a few % makes the latencies unreliable)"),
        "- models:",
    ]
    if head.get("command"):
        lines.insert(2, f"- command: `{head['command']}`")
    for name, m in head["models"].items():
        lines.append(f"  - {name} ({_describe_model(m['model'])}; {m['parameters']:,} parameters): "
                     f"{training_line(m)}; checkpoint `{m['checkpoint']}`")
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * 2 + "---:|" * (len(cols) - 2)]
    batches = head["settings"]["batch_sizes"]
    lines += ["| " + " | ".join(row_cells(r, batches)) + " |" for r in rows]
    return "\n".join(lines + [""] + footnotes(results)) + "\n"


def data_line(data: dict[str, Any]) -> str:
    """The header line saying what the test images are."""
    if "path" in data:  # a folder with labels.csv (LabeledImageFolder.describe)
        h, w = data["image_size"]
        text = (f"- test data: {data['n_test']} images of {w}x{h} px from `{data['path']}` ({data['channels']} "
                f"channel(s)), classes from column `{data['label_column']}` of labels.csv")
        g = data.get("generator")
        if g:
            text += (f"; written by `foveate data megapixel-mnist` (split {g.get('split')}, canvas "
                     f"{g.get('canvas_size')}, profile {g.get('profile')}, {g.get('n_noise')} noise patches, "
                     f"seed {g.get('seed')}, digits `{g.get('digits')}`)")
        return text
    if "canvas_size" not in data:
        return f"- test data: {data.get('n_test', '?')} images ({data.get('name', 'a data set')})"
    digits = f"`{data['digits']}`" if data.get("digits") else "built-in scikit-learn digits"
    return (f"- test data: {data['n_test']} {data['name']} canvases of {data['canvas_size']} px "
            f"(profile {data['profile']}, label {data['label']}, {data['n_noise']} noise patches), digits {digits}, "
            f"seed {data['seed']}")


def _images_word(data: dict[str, Any]) -> str:
    return "test canvases" if data.get("name") == "megapixel_mnist" else "test images"


def _names(rows: list[dict[str, Any]], rule: str) -> str:
    return ", ".join(dict.fromkeys(r["model"] for r in rows if r["pixels_read_rule"] == rule))


def footnotes(results: Results) -> list[str]:
    """Numbered notes saying exactly how every column was measured in this run."""
    head, rows = results["header"], results["rows"]
    s, n = head["settings"], min(head["settings"]["latency_images"], head["data"]["n_test"])
    batches = s["batch_sizes"]
    lo, hi = min(r["gflops_resampling"] for r in rows), max(r["gflops_resampling"] for r in rows)
    resampling = f"{lo:.4f}" if f"{lo:.4f}" == f"{hi:.4f}" else f"{lo:.4f} to {hi:.4f}"
    word = _images_word(head["data"])
    timed = "; ".join(f"batch {b}: {n} forwards of {b} of these images each (cycling), divided by {b}"
                      for b in batches if b > 1)
    word = _images_word(head["data"])
    disjoint = " (digits disjoint from training)" if head["data"].get("name") == "megapixel_mnist" else ""
    locations = ("Locations: the budget passed as `model(x, locations=K)`; for TNet, cells read per selection "
                 "step (K at every level, K1-K2 one per level); ATS, patches sampled; IPS, patches kept; none: the "
                 f"model's default (baselines take no budget). Test acc: top-1 on the {head['data']['n_test']} "
                 f"{word}, the same images for every model and budget{disjoint}.")
    gflops = ("GFLOPs/img: torch.utils.flop_counter.FlopCounterMode around one batch-1 forward of the first test "
              "image; it counts matrix products and convolutions, FLOPs = 2 x MACs. Resampling it does not count "
              "is added as an estimate, from the ops each forward actually runs: every resize (F.interpolate in any "
              "mode, antialiased or not, e.g. to a model's low-resolution view) and every average pooling at 2 FLOPs "
              "per element of the larger of its input and output, grid sampling at 2 FLOPs per output element "
              f"({resampling} GFLOPs of the totals; per model and op in results.json). Elementwise operations "
              "(activations, normalisation, additions), crops by slicing and max pooling count 0.")
    latency = ("Latency: time.perf_counter around model.forward alone under torch.inference_mode, "
               f"{head['environment']['threads']} threads, on the first {n} {word} (loading excluded), "
               f"after {s['warmup']} untimed warm-up forwards; batch 1: {n} forwards of one image"
               + (f"; {timed}" if timed else "") + ". Median ± interquartile range of the per-image times.")
    memory = ("Peak inference memory: a fresh Python process per row loads the checkpoint and the first test "
              f"image, resets its RSS high-water mark, then runs {s['probe_forwards']} batch-1 forwards; peak RSS "
              "(VmHWM) minus RSS just before them (weights and input excluded; one-time costs of a first forward "
              "included: results.json also has a warm repeat). Allocator peak: the exact peak of the bytes "
              "PyTorch's allocator held above the starting level during one batch-1 forward of the first image "
              "(foveate.profiling.peak_memory: profiler allocation events on CPU, max_memory_allocated on CUDA); "
              "it counts every tensor, temporaries inside ops included, and nothing allocated outside PyTorch.")
    notes = [locations, gflops, latency, memory]
    read = [f"Full-res pixels read: mean over the first {n} {word}."]
    if _names(rows, "chosen_boxes"):
        read.append(f"{_names(rows, 'chosen_boxes')}: area of the union of the chosen boxes of the last trace "
                    "level, rounded to whole pixels and clipped to the image (overlaps counted once), over the "
                    "image area; coarser levels see downsampled views.")
    if _names(rows, "reads_full_image"):
        read.append(f"{_names(rows, 'reads_full_image')}: 100, every full-resolution pixel passes through the "
                    "network (reads_full_image).")
    if _names(rows, "no_trace"):
        read.append(f"{_names(rows, 'no_trace')}: 0, nothing is selected (no trace); the model reads only a "
                    "downsampled view of the image, never full-resolution pixels.")
    notes.append(" ".join(read))
    for name, m in head["models"].items():
        if m["trained_on_other_data"]:
            diff = ", ".join(f"{k}={v}" for k, v in m["trained_on_other_data"].items())
            notes.append(f"{name} was trained on data that differs from the test data in: {diff}.")
    if any(r.get("memory") and not r["memory"]["peak_reset"] for r in rows):
        notes.append("WARNING: the RSS high-water mark could not be reset (/proc/self/clear_refs); "
                     "memory may include transients from loading.")
    return [f"{i}. {note}" for i, note in enumerate(notes, start=1)]


def write_results(out_dir: str | Path, results: Results, table: str, stem: str = "results") -> None:
    """OUT_DIR/STEM.json (header and rows) and OUT_DIR/STEM.md (the table), each replaced atomically."""
    out_dir = Path(out_dir)
    with atomic_open(out_dir / f"{stem}.json", "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    with atomic_open(out_dir / f"{stem}.md", "w") as f:
        f.write(table)


# -- CSV ------------------------------------------------------------------------------------
def csv_columns(results: Results) -> list[str]:
    """One flat column per number of a row (latency per batch size, memory cold and warm)."""
    batches = results["header"]["settings"]["batch_sizes"]
    return (["model", "locations", "test_acc", "gflops", "gflops_resampling"]
            + [f"latency_ms_batch{b}_{stat}" for b in batches for stat in ("median", "iqr")]
            + ["memory_added_mib", "memory_warm_added_mib", "allocator_peak_mib", "pixels_read_pct", "pixels_read_rule",
               "checkpoint"])


def csv_rows(results: Results) -> list[list[Any]]:
    batches = results["header"]["settings"]["batch_sizes"]
    models = results["header"]["models"]
    out = []
    for r in results["rows"]:
        memory = r.get("memory") or {}
        out.append([r["model"], r["budget"], r["test_acc"], r["gflops"], r["gflops_resampling"]]
                   + [r["latency_ms"][str(b)][stat] for b in batches for stat in ("median", "iqr")]
                   + [memory.get("added_mib", ""), (memory.get("warm") or {}).get("added_mib", ""),
                      r.get("allocator_peak_mib", ""), r["pixels_read_pct"], r["pixels_read_rule"], models[r["model"]]["checkpoint"]])
    return out


def write_csv(path: str | Path, header: list[str], rows: list[list[Any]]) -> None:
    """A CSV file (header row, then `rows`; None as an empty cell), replaced atomically."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


def save_report(out_dir: str | Path, results: Results, table: str) -> list[Path]:
    """Everything a benchmark run leaves in OUT_DIR, each file replaced atomically: results.json,
    results.md (`table`), results.csv (one row per model and budget) and the plots
    accuracy_vs_gflops.png and accuracy_vs_latency.png. Returns the paths written."""
    from .plots import plot_tradeoff

    out_dir = Path(out_dir)
    write_results(out_dir, results, table)
    write_csv(out_dir / "results.csv", csv_columns(results), csv_rows(results))
    return ([out_dir / "results.json", out_dir / "results.md", out_dir / "results.csv"]
            + plot_tradeoff(results, out_dir))
