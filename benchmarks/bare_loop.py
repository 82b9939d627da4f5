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
import time
from pathlib import Path

import pynvml
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from pytest_llem.models.tiny import resolve_model  # writes the config; the inputs, not the method
from pytest_llem.study.prompts import load_prompt_texts, tokenize_prompts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="llem-wide")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--n-prompts", type=int, default=256)
    parser.add_argument("--max-input-tokens", type=int, default=128)
    parser.add_argument("--max-output-tokens", type=int, default=128)
    parser.add_argument("--min-window", type=float, default=10.0)
    parser.add_argument("--reference-seconds", type=float, default=0.0)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = tokenize_prompts(tokenizer, load_prompt_texts("llem-prompts", args.n_prompts), args.max_input_tokens)
    device = torch.device("cuda:0")
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.bfloat16)
    model.eval()
    pad = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(
        max_new_tokens=args.max_output_tokens, do_sample=False, eos_token_id=None, pad_token_id=pad, bos_token_id=None
    )
    batches = []
    for start in range(0, len(prompts), args.batch_size):
        rows = prompts[start : start + args.batch_size]
        width = max(map(len, rows))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        batches.append((ids, mask))

    def run(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        out = model.generate(input_ids=batch[0], attention_mask=batch[1], generation_config=model.generation_config)
        torch.cuda.synchronize(device)
        return int(out.shape[0] * (out.shape[1] - batch[0].shape[1]))

    latencies: list[float] = []
    while len(latencies) < 20:  # the plugin's default warm-up rule
        t = time.perf_counter()
        run(batches[len(latencies) % len(batches)])
        latencies.append(time.perf_counter() - t)
        recent = latencies[-3:]
        if len(latencies) >= max(3, len(batches)) and statistics.pstdev(recent) / statistics.fmean(recent) < 0.05:
            break

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByUUID("GPU-" + str(torch.cuda.get_device_properties(0).uuid))
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
        # Counter read at every batch end under the same steady load.
        ticks = [(time.perf_counter(), pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))]
        while ticks[-1][0] - ticks[0][0] < args.reference_seconds:
            run(batches[len(ticks) % len(batches)])
            ticks.append((time.perf_counter(), pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)))
        reference_w = (ticks[-1][1] - ticks[0][1]) / 1000.0 / (ticks[-1][0] - ticks[0][0])
        errors = []
        for i, (ti, ei) in enumerate(ticks):
            for tj, ej in ticks[i + 1 :]:
                if tj - ti >= args.min_window:
                    errors.append(abs((ej - ei) / 1000.0 / (tj - ti) - reference_w) / reference_w)
                    break
        result["edge_error"] = {
            "reference_s": ticks[-1][0] - ticks[0][0], "reference_w": reference_w, "window_s": args.min_window,
            "n_windows": len(errors), "max": max(errors), "mean": statistics.fmean(errors),
            "p95": sorted(errors)[int(0.95 * (len(errors) - 1))],
        }  # fmt: skip
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
