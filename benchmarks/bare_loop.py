"""The gpu-bound workload as a bare script: engine loop and energy counter, no plugin.

The reference that the plugin's figures are compared with (same model construction, same
token ids, same generation settings, same warm-up rule, same window rule), and the source of
the window edge-error figure: after the measured window it keeps the load running for
``--reference-seconds`` and compares every ``--min-window`` sub-window with the long window's
mean power.

    python benchmarks/bare_loop.py --model llem-wide --batch-size 256 --n-prompts 256 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pynvml
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
)

from pytest_llem.models.tiny import (
    resolve_model,  # writes the config; the inputs, not the method
)
from pytest_llem.runner.prompts import load_prompt_texts, tokenize_prompts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="llem-wide")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--n-prompts", type=int, default=256)
    parser.add_argument("--max-input-tokens", type=int, default=128)
    parser.add_argument("--max-output-tokens", type=int, default=128)
    parser.add_argument("--min-window", type=float, default=10.0)
    parser.add_argument("--reference-seconds", type=float, default=0.0)
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=0.0,
        help="steady load before the reference window",
    )
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = tokenize_prompts(
        tokenizer,
        load_prompt_texts("llem-prompts", args.n_prompts),
        args.max_input_tokens,
    )
    device = torch.device("cuda:0")
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(path), dtype=torch.bfloat16
        )
    model.eval()
    pad = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(
        max_new_tokens=args.max_output_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=pad,
        bos_token_id=None,
    )
    batches = []
    for start in range(0, len(prompts), args.batch_size):
        rows = prompts[start : start + args.batch_size]
        width = max(map(len, rows))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor(
            [[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device
        )
        batches.append((ids, mask))

    def run(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        out = model.generate(
            input_ids=batch[0],
            attention_mask=batch[1],
            generation_config=model.generation_config,
        )
        torch.cuda.synchronize(device)
        return int(out.shape[0] * (out.shape[1] - batch[0].shape[1]))

    latencies: list[float] = []
    while len(latencies) < 20:  # the plugin's default warm-up rule
        t = time.perf_counter()
        run(batches[len(latencies) % len(batches)])
        latencies.append(time.perf_counter() - t)
        recent = latencies[-3:]
        if (
            len(latencies) >= max(3, len(batches))
            and statistics.pstdev(recent) / statistics.fmean(recent) < 0.05
        ):
            break

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByUUID(
        "GPU-" + str(torch.cuda.get_device_properties(0).uuid)
    )
    torch.cuda.synchronize(device)
    e0, t0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter()
    tokens, passes = 0, 0
    while True:
        for batch in batches:
            tokens += run(batch)
        passes += 1
        if time.perf_counter() - t0 >= args.min_window:
            break
    e1, t1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter()
    energy_j, window_s = (e1 - e0) / 1000.0, t1 - t0
    result = {
        "tokens": tokens, "passes": passes, "window_s": window_s, "energy_j": energy_j,
        "tokens_per_s": tokens / window_s, "mj_per_tok": 1000.0 * energy_j / tokens, "warmup_batches": len(latencies),
    }  # fmt: skip

    if args.reference_seconds > 0:
        result["edge_error"] = _edge_error(
            args, handle, lambda k: run(batches[k % len(batches)])
        )
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


def _edge_error(
    args: argparse.Namespace, handle: object, run_batch: object
) -> dict[str, object]:
    """Window edge error at ``--min-window`` against the long reference window's mean power.

    Two kinds of window over the same steady load: *read* windows open and close at batch
    ends with one counter read each (what a meter does); *tick* windows open and close at the
    moments the counter moved, seen by a thread polling it every millisecond (what a meter
    aligned to the counter's updates would get). Both are compared with the mean power of the
    whole reference window, so real power drift counts against both alike.
    """
    soak_until = time.perf_counter() + args.soak_seconds
    k = 0
    while time.perf_counter() < soak_until:  # thermal and power-cap steady state first
        run_batch(k)  # type: ignore[operator]
        k += 1
    ticks: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        last = None
        while not stop.is_set():
            value = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            if value != last:
                ticks.append((time.perf_counter(), value))
                last = value
            time.sleep(0.001)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    reads = [(time.perf_counter(), pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))]
    while reads[-1][0] - reads[0][0] < args.reference_seconds:
        run_batch(k)  # type: ignore[operator]
        k += 1
        reads.append(
            (time.perf_counter(), pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        )
    stop.set()
    poller.join()
    inner = [
        t for t in ticks[1:] if reads[0][0] <= t[0] <= reads[-1][0]
    ]  # first entry: not a tick

    def errors(points: list[tuple[float, int]]) -> list[float]:
        reference_w = (
            (points[-1][1] - points[0][1]) / 1000.0 / (points[-1][0] - points[0][0])
        )
        out = []
        for i, (ti, ei) in enumerate(points):
            for tj, ej in points[i + 1 :]:
                if tj - ti >= args.min_window:
                    out.append(
                        abs((ej - ei) / 1000.0 / (tj - ti) - reference_w) / reference_w
                    )
                    break
        return out

    def stats(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"n_windows": len(values), "max": ordered[-1], "mean": statistics.fmean(values),
                "p95": ordered[int(0.95 * (len(ordered) - 1))]}  # fmt: skip

    def same_span(points: list[tuple[float, int]]) -> list[float]:
        """Read windows against the tick-interpolated energy of exactly the same span.

        Power drift cancels here (both figures cover the same seconds), so what is left is the
        error of reading a counter that moves every ~100 ms: the edge error proper.
        """
        times, values = [t for t, _ in inner], [v for _, v in inner]
        out = []
        for i, (ti, ei) in enumerate(points):
            for tj, ej in points[i + 1 :]:
                if tj - ti >= args.min_window and times[0] <= ti and tj <= times[-1]:
                    truth = float(
                        np.interp(tj, times, values) - np.interp(ti, times, values)
                    )
                    out.append(abs((ej - ei) - truth) / truth)
                    break
        return out

    periods = [b[0] - a[0] for a, b in pairwise(inner)]
    return {
        "reference_s": reads[-1][0] - reads[0][0],
        "reference_w": (reads[-1][1] - reads[0][1])
        / 1000.0
        / (reads[-1][0] - reads[0][0]),
        "window_s": args.min_window,
        "soak_s": args.soak_seconds,
        "counter_period_s": statistics.median(periods) if periods else None,
        "read_windows": stats(errors(reads)),
        "tick_windows": stats(errors(inner)) if len(inner) > 2 else None,
        "read_vs_interpolated_same_span": stats(same_span(reads))
        if len(inner) > 2
        else None,
    }


if __name__ == "__main__":
    main()
