#!/usr/bin/env python3
"""Time prefill of flash-linear-attention 0.6.0's own GatedDeltaNetForCausalLM on the CPU.

The counterpart of `ltm-engine run --model DIR --context-file FILE`: the same model directory,
the same token ids (the model's tokenizer on the same text file, `<s>` first, as the engine
encodes the start of a file), logits at every position, and the mean next-token NLL over the
N-1 predicted tokens, so the two engines can be checked to compute the same thing.

fla's Triton kernels are replaced by PyTorch code (scripts/fla_cpu_patch.py, the patch that made
the fixture references); the gated delta rule itself is fla's naive chunk reference
(fla/ops/gated_delta_rule/naive.py) unless --chunk-impl says otherwise.  Note: fla's layer picks
its fused_recurrent path for calls of at most 64 tokens (in eval), the chunk path otherwise; the
JSON line says which ran ("paths": calls per layer-path in one timed run).

Run with the venv from scripts/setup-fla-cpu.sh:
    PY=$(bash scripts/setup-fla-cpu.sh)
    "$PY" scripts/fla_cpu_prefill.py --model tests/fixtures/gdn-tiny --text FILE --tokens 4096
    "$PY" scripts/fla_cpu_prefill.py --model tests/fixtures/gdn-tiny --text FILE --window 512

Output: one JSON line on stdout (progress on stderr):
  {"impl":"fla-pytorch","model":...,"tokens":N,"window":W,"runs":R,"median_s":...,
   "tokens_per_second":...,"mean_nll":...,"torch":...,"threads":...,...}
median_s is one whole prefill (every window's forward and the NLL of its logits, which is what the
engine's tokens/s covers too); median_forward_s excludes the NLL.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

CHUNK_IMPLS = ("chunk", "recurrent", "fast")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory (config.json, model.safetensors, tokenizer.json)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="text file: token ids are the model's tokenizer on it (<s> first)")
    src.add_argument("--ids", help="JSON file with token ids: a list, or an object with 'prompt_ids' "
                                   "(e.g. a fixture's generation.json)")
    p.add_argument("--tokens", "-n", type=int, default=4096,
                   help="tokens to prefill (default 4096; fewer if the text/ids have fewer)")
    p.add_argument("--seed", type=int, default=0, help="seed for random ids (neither --text nor --ids)")
    p.add_argument("--window", type=int, default=0,
                   help="feed in windows of W tokens carrying the cache (default: one call over all N)")
    p.add_argument("--runs", "-r", type=int, default=5, help="timed runs after one warm-up (default 5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all usable cores)")
    p.add_argument("--chunk-impl", choices=CHUNK_IMPLS, default="chunk",
                   help="recurrence behind fla's chunk path: 'chunk' = fla's naive_chunk_gated_delta_rule "
                        "(default), 'recurrent' = fla's naive_recurrent, 'fast' = the patch's training "
                        "variant of naive_chunk (triangular solve instead of the row loop)")
    p.add_argument("--patch", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fla_cpu_patch.py"),
                   help="path of fla_cpu_patch.py (default: next to this script)")
    return p.parse_args(argv)


def log(msg):
    print(f"fla_cpu_prefill: {msg}", file=sys.stderr, flush=True)


def load_ids(args, vocab_size):
    import torch
    if args.text:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
        ids = tok.encode(text, add_special_tokens=True).ids
        source = f"text:{args.text}"
    elif args.ids:
        with open(args.ids) as f:
            data = json.load(f)
        ids = data["prompt_ids"] if isinstance(data, dict) else data
        source = f"ids:{args.ids}"
    else:
        g = torch.Generator().manual_seed(args.seed)
        ids = torch.randint(0, vocab_size, (args.tokens,), generator=g).tolist()
        source = f"random:seed={args.seed}"
    if len(ids) < args.tokens:
        log(f"only {len(ids)} tokens available (asked for {args.tokens}); using {len(ids)}")
    ids = ids[: args.tokens]
    if len(ids) < 2:
        sys.exit("fla_cpu_prefill: need at least 2 tokens")
    return torch.tensor([ids], dtype=torch.long), source


def main(argv=None):
    args = parse_args(argv)
    if args.tokens < 2 or args.runs < 1 or args.window < 0:
        sys.exit("fla_cpu_prefill: --tokens >= 2, --runs >= 1, --window >= 0")
    os.environ["GDN_CHUNK_IMPL"] = "chunk" if args.chunk_impl == "fast" else args.chunk_impl

    import importlib.util

    import torch
    import torch.nn.functional as F

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)

    spec = importlib.util.spec_from_file_location("fla_cpu_patch", args.patch)
    patch = importlib.util.module_from_spec(spec)
    sys.modules["fla_cpu_patch"] = patch
    spec.loader.exec_module(patch)  # before any model is built: replaces every Triton kernel
    if args.chunk_impl == "fast":
        patch.use_fast_training_chunk(True)

    import fla
    import fla.layers.gated_deltanet as gdn_layer
    import transformers
    from fla.models import GatedDeltaNetForCausalLM

    # Count which of the layer's two paths ran (the layer looks these names up in its module).
    paths = {"chunk": 0, "fused_recurrent": 0}

    def counted(name, fn):
        def wrapper(*a, **k):
            paths[name] += 1
            return fn(*a, **k)
        return wrapper

    gdn_layer.chunk_gated_delta_rule = counted("chunk", gdn_layer.chunk_gated_delta_rule)
    gdn_layer.fused_recurrent_gated_delta_rule = counted("fused_recurrent",
                                                         gdn_layer.fused_recurrent_gated_delta_rule)

    model = GatedDeltaNetForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    ids, source = load_ids(args, model.config.vocab_size)
    n = ids.shape[1]
    window = args.window if 0 < args.window < n else n
    log(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; "
        f"{n} tokens from {source}; window {window}; threads {threads}; chunk impl {args.chunk_impl}")

    def prefill():
        """One prefill from an empty state; returns (mean NLL, forward seconds)."""
        cache, last = None, None
        nll_sum, count, fwd = 0.0, 0, 0.0
        for a in range(0, n, window):
            x = ids[:, a:a + window]
            t0 = time.perf_counter()
            out = model(input_ids=x, past_key_values=cache, use_cache=True)
            fwd += time.perf_counter() - t0
            cache = out.past_key_values
            logits = out.logits[0].float()  # [w, vocab], every position
            if logits.shape[0] != x.shape[1]:
                raise RuntimeError(f"expected logits at every position, got {tuple(logits.shape)}")
            if last is not None:  # the window's first token is predicted by the previous window's last row
                logits = torch.cat([last[None], logits], 0)
                targets = x[0]
            else:
                targets = x[0, 1:]
            lp = F.log_softmax(logits[: targets.shape[0]], dim=-1)
            nll = -lp.gather(1, targets[:, None]).squeeze(1)
            nll_sum += float(nll.double().sum())
            count += targets.shape[0]
            last = out.logits[0, -1].float()
        assert count == n - 1
        return nll_sum / count, fwd

    with torch.inference_mode():
        t0 = time.perf_counter()
        warm_nll, _ = prefill()
        log(f"warm-up: {time.perf_counter() - t0:.3f} s, mean NLL {warm_nll:.6f}")
        times, fwds, nlls = [], [], []
        for r in range(args.runs):
            for k in paths:
                paths[k] = 0
            t0 = time.perf_counter()
            mean_nll, fwd = prefill()
            dt = time.perf_counter() - t0
            times.append(dt)
            fwds.append(fwd)
            nlls.append(mean_nll)
            log(f"run {r + 1}/{args.runs}: {dt:.3f} s ({n / dt:.1f} tokens/s), forward {fwd:.3f} s, "
                f"mean NLL {mean_nll:.6f}")

    med = statistics.median(times)
    result = {
        "impl": "fla-pytorch",
        "model": args.model,
        "tokens": n,
        "window": window,
        "runs": args.runs,
        "median_s": round(med, 6),
        "tokens_per_second": round(n / med, 3),
        "mean_nll": nlls[0],
        "predicted_tokens": n - 1,
        "median_forward_s": round(statistics.median(fwds), 6),
        "min_s": round(min(times), 6),
        "max_s": round(max(times), 6),
        "source": source,
        "chunk_impl": args.chunk_impl,
        "paths": dict(paths),  # layer-path calls in the last timed run (layers x windows)
        "torch": torch.__version__,
        "fla": getattr(fla, "__version__", None),
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
    }
    if max(nlls) - min(nlls) > 1e-9:
        result["mean_nll_spread"] = max(nlls) - min(nlls)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
