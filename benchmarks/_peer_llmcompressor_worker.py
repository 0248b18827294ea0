"""Runs INSIDE the llm-compressor venv (never imports hfcompress): one oneshot prune, timed.

    <peer-python> benchmarks/_peer_llmcompressor_worker.py MODEL_DIR TOKENS.safetensors METHOD PATTERN

``TOKENS.safetensors`` holds ``calibration`` [samples, seq_len] and ``eval`` [n] token ids made by
``benchmarks/prune_peer_llmcompressor.py`` (the same windows hfcompress calibrates on). Prints
one JSON line: wall seconds of ``oneshot``, CPU seconds, peak RSS and WikiText-2 perplexity
(first 16,384 tokens, 512-token windows: the protocol of hfcompress.evaluate.perplexity).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time


def main() -> None:
    model_dir, tokens, method, pattern = sys.argv[1:5]
    import psutil
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    data = load_file(tokens)
    cal, ev = data["calibration"], data["eval"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ds = Dataset.from_dict({"input_ids": cal.tolist(), "attention_mask": torch.ones_like(cal).tolist()})
    kw = {"sparsity": 0.5, "targets": ["Linear"], "ignore": ["re:.*lm_head"]}
    if pattern != "none":
        kw["mask_structure"] = pattern
    if method == "sparsegpt":
        from llmcompressor.modifiers.pruning import SparseGPTModifier

        recipe = SparseGPTModifier(**kw)
    else:
        from llmcompressor.modifiers.pruning import WandaPruningModifier

        recipe = WandaPruningModifier(**kw)
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    c0, t0 = os.times(), time.perf_counter()
    oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=int(cal.shape[0]),
            max_seq_length=int(cal.shape[1]))
    wall = time.perf_counter() - t0
    c1 = os.times()
    stop.set()
    th.join()
    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for a in range(0, ev.numel() - 1, 512):
            w = ev[a:a + 512].unsqueeze(0)
            if w.shape[1] < 2:
                break
            out = model(input_ids=w, labels=w)
            nll += float(out.loss) * (w.shape[1] - 1)
            count += w.shape[1] - 1
    zeros = total = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in name:
            zeros += int((mod.weight == 0).sum())
            total += mod.weight.numel()
    import llmcompressor

    print(json.dumps({"seconds": round(wall, 1), "cpu_seconds": round((c1.user - c0.user) + (c1.system - c0.system), 1),
                      "peak_rss_mb_during_prune": round(peak[0] / 2**20),
                      "perplexity": round(math.exp(nll / count), 2), "sparsity": round(zeros / total, 5),
                      "llmcompressor": llmcompressor.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
