#!/usr/bin/env python3
"""GPU anchor: ltm-engine's CUDA forward beside flash-linear-attention's Triton
`chunk_gated_delta_rule`, on the same card in the same run (issue #3's speed goal).

Run by gpu-bundle/gpu-check.sh on the GPU machine (python3 there has torch and
Triton; fla-core travels as a wheel in gpu-bundle/wheels and is put on sys.path
by the caller). What it does, in order, each part reported even if another fails:

  1. ceilings of this card: a device-to-device copy (bytes read + written) and an
     8192^3 bf16 matrix product on random data, medians of CUDA-event timings;
  2. speed, alternating the two sides for --rounds rounds at B=1, T=--tokens,
     H=--heads, K=V=--dim, bf16 q/k/v, f32 gates: ours with `gpu_bench` (inputs
     resident on the device, median of its timed runs), fla's with CUDA events
     (median of --repeats after warm-up), final state returned by both;
  3. agreement at T=--agree-tokens on fresh random inputs with an initial state:
     ours through `ltm-engine kernel --device cuda` (safetensors in and out), fla's
     Triton kernel, and a float64 token-by-token recurrence on the same
     bf16-rounded inputs; relative Frobenius errors of o and the final state;
  4. the floor of DESIGN.md section 6 from the ceilings measured in step 1, and
     ours as a percentage of it.

`--device cpu` is a dry run of this harness on a machine without a GPU: small
shapes, wall-clock timing, fla's pure-PyTorch `naive_chunk_gated_delta_rule` in
place of the Triton kernel and `ltm-engine kernel --device cpu` for our side. It
tests the script, not the GPU.

The last line printed is one JSON object with every number (also --json-out).
"""

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

CHUNK = 64


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", required=True, help="the ltm-engine binary")
    p.add_argument("--bench", help="the gpu_bench binary (needed with --device cuda)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tokens", type=int, default=65536)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--agree-tokens", type=int, default=8192)
    p.add_argument("--json-out")
    p.add_argument("--warm-only", action="store_true",
                   help="only run fla once at both shapes, so that Triton compiles and "
                        "autotunes its kernels (slow on a fresh machine) before anything is timed")
    a = p.parse_args()
    if a.device == "cuda" and not a.bench:
        p.error("--device cuda needs --bench")
    return a


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------

def median_seconds(fn, device, warmup, repeats):
    """Median seconds of `fn()`: CUDA events on the GPU, a synchronised wall clock on
    the CPU. Returns (median, all)."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if device == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def ceilings(device):
    """Copy bandwidth (bytes read + written per second) and bf16 matrix rate."""
    if device == "cuda":
        n_bytes, mm = 2 << 30, 8192
    else:
        n_bytes, mm = 64 << 20, 512
    src = torch.randint(0, 255, (n_bytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_s, _ = median_seconds(lambda: dst.copy_(src), device, 3, 10)
    del src, dst
    a = torch.randn(mm, mm, device=device).to(torch.bfloat16)
    b = torch.randn(mm, mm, device=device).to(torch.bfloat16)
    mm_s, _ = median_seconds(lambda: a @ b, device, 3, 10)
    return {"copy_bytes_per_s": 2 * n_bytes / copy_s, "bf16_flop_per_s": 2 * mm**3 / mm_s,
            "copy_bytes": 2 * n_bytes, "matmul_n": mm}


# --------------------------------------------------------------------------
# fla
# --------------------------------------------------------------------------

def fla_version():
    try:
        from importlib.metadata import version
        return version("fla-core")
    except Exception:
        return "unknown"


def fla_forward(device):
    """fla's forward as f(q, k, v, g, beta, initial_state) -> (o, final_state)."""
    if device == "cuda":
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        def run(q, k, v, g, beta, h0):
            return chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0,
                                          output_final_state=True)
        return run, "fla.ops.gated_delta_rule.chunk_gated_delta_rule (Triton)"
    # The naive file alone: importing fla.ops would import every Triton kernel.
    spec = importlib.util.find_spec("fla")
    if spec is None or spec.origin is None:
        raise RuntimeError("package fla (fla-core) is not installed")
    path = os.path.join(os.path.dirname(spec.origin), "ops", "gated_delta_rule", "naive.py")
    mspec = importlib.util.spec_from_file_location("fla_gdr_naive", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)

    def run(q, k, v, g, beta, h0):
        return mod.naive_chunk_gated_delta_rule(q.float(), k.float(), v.float(), g, beta,
                                                initial_state=h0, output_final_state=True)
    return run, "fla naive_chunk_gated_delta_rule (PyTorch, dry run)"


# --------------------------------------------------------------------------
# inputs and reference
# --------------------------------------------------------------------------

def make_inputs(T, H, d, device, seed, with_state):
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32)

    q = F.normalize(randn(1, T, H, d), dim=-1).to(torch.bfloat16)
    k = F.normalize(randn(1, T, H, d), dim=-1).to(torch.bfloat16)
    v = randn(1, T, H, d).to(torch.bfloat16)
    beta = torch.sigmoid(randn(1, T, H))
    g = F.logsigmoid(randn(1, T, H)) / 16.0
    h0 = 0.1 * randn(1, H, d, d) if with_state else None
    to = lambda x: None if x is None else x.to(device).contiguous()  # noqa: E731
    return [to(x) for x in (q, k, v, g, beta, h0)]


def recurrence_f64(q, k, v, g, beta, h0):
    """o_t = S_t^T (q_t / sqrt(K)), S_t = exp(g_t) S_{t-1} + k_t (beta_t (v_t - exp(g_t) S_{t-1}^T k_t))^T,
    in float64 on whatever device the inputs are on, all heads at once."""
    q, k, v, g, beta = (x[0].double() for x in (q, k, v, g, beta))
    T, H, K = q.shape
    S = h0[0].double().clone() if h0 is not None else torch.zeros(H, K, v.shape[-1], dtype=torch.float64, device=q.device)
    o = torch.empty(T, H, v.shape[-1], dtype=torch.float64, device=q.device)
    scale = 1.0 / math.sqrt(K)
    for t in range(T):
        S.mul_(torch.exp(g[t])[:, None, None])
        kt = k[t]
        err = beta[t][:, None] * (v[t] - torch.einsum("hkv,hk->hv", S, kt))
        S.add_(kt[:, :, None] * err[:, None, :])
        o[t] = torch.einsum("hkv,hk->hv", S, q[t]) * scale
    return o[None], S[None]


def rel_fro(x, ref):
    x = x.detach().double().cpu()
    ref = ref.detach().double().cpu()
    if x.shape != ref.shape:
        return {"error": f"shape {tuple(x.shape)} vs reference {tuple(ref.shape)}"}
    finite = bool(torch.isfinite(x).all())
    r = (torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref)).item()
    return {"rel_fro": r if finite else float("nan"), "all_finite": finite}


# --------------------------------------------------------------------------
# our side
# --------------------------------------------------------------------------

def run_json(cmd, timeout):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {p.returncode}: {p.stderr.strip()[-1500:]}")
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"`{' '.join(cmd)}` printed no JSON line: {p.stdout[-500:]!r}")


def ours_speed(a, extra=()):
    if a.device == "cuda":
        rep = run_json([a.bench, "--tokens", str(a.tokens), "--heads", str(a.heads), "--dim",
                        str(a.dim), "--dtype", "bf16", "--repeats", str(a.repeats), *extra], 120)
        return rep["seconds_median"]
    if extra:
        raise RuntimeError(f"{' '.join(extra)}: GPU only")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
        q, k, v, g, beta, _ = make_inputs(a.tokens, a.heads, a.dim, "cpu", 7, False)
        save_file({"q": q, "k": k, "v": v, "g": g, "beta": beta}, src)
        rep = run_json([a.engine, "kernel", "--input", src, "--output", dst, "--json",
                        "--device", "cpu", "--repeats", str(a.repeats)], 300)
        return rep["forward_seconds"]


def ours_forward(a, q, k, v, g, beta, h0):
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
        tensors = {"q": q, "k": k, "v": v, "g": g, "beta": beta, "initial_state": h0}
        save_file({n: x.cpu().contiguous() for n, x in tensors.items()}, src)
        run_json([a.engine, "kernel", "--input", src, "--output", dst, "--json",
                  "--device", a.device], 300)
        out = load_file(dst)
        return out["o"], out["final_state"]


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def step(report, name, fn):
    t0 = time.perf_counter()
    try:
        report[name] = fn()
    except Exception as e:  # each step reports on its own; one failing keeps the rest
        traceback.print_exc()
        report[name] = {"error": f"{type(e).__name__}: {e}"}
    print(f"[{name}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr, flush=True)
    # Partial results as they come: a run stopped at its time limit keeps what it had.
    print(json.dumps({name: report[name]}), flush=True)


def main():
    a = parse_args()
    dev = a.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("gpu_anchor: torch sees no CUDA device", file=sys.stderr)
        return 1
    report = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu (dry run)",
              "torch": torch.__version__, "fla": fla_version(),
              "shape": {"batch": 1, "tokens": a.tokens, "heads": a.heads, "key_dim": a.dim,
                        "value_dim": a.dim, "dtype": "bf16 q/k/v, f32 g/beta"}}
    fla, fla_name = None, None
    try:
        fla, fla_name = fla_forward(dev)
        report["fla_op"] = fla_name
    except Exception as e:
        report["fla_op"] = {"error": f"{type(e).__name__}: {e}"}

    if a.warm_only:
        if fla is None:
            print(f"fla: {report['fla_op']}")
            return 1
        t0 = time.perf_counter()
        for T, with_state in ((a.tokens, False), (a.agree_tokens, True)):
            with torch.no_grad():
                fla(*make_inputs(T, a.heads, a.dim, dev, 0, with_state))
        if dev == "cuda":
            torch.cuda.synchronize()
        print(f"fla warmed up in {time.perf_counter() - t0:.1f} s")
        return 0

    step(report, "ceilings", lambda: ceilings(dev))

    def speed():
        # Ours as the backend runs by default, ours with the FAST bf16 scan (GPU only),
        # and fla's, in turn, each round.
        variants = {"ours": ()}
        if dev == "cuda":
            variants["ours_bf16_fast"] = ("--bf16-fast",)
        times = {name: [] for name in variants}
        errors = {}
        theirs = []
        inputs = make_inputs(a.tokens, a.heads, a.dim, dev, 1, False)
        for _ in range(a.rounds):
            for name, extra in variants.items():
                try:  # one variant failing must not lose the others' times
                    times[name].append(ours_speed(a, extra))
                except Exception as e:
                    errors[name] = f"{type(e).__name__}: {e}"
            if fla is not None:
                try:
                    theirs.append(median_seconds(lambda: fla(*inputs), dev, 3, a.repeats)[0])
                except Exception as e:
                    errors["fla"] = f"{type(e).__name__}: {e}"
        res = {"errors": errors} if errors else {}
        times = {name: t for name, t in times.items() if t}
        for name, t in times.items():
            res.update({f"{name}_seconds": t, f"{name}_median": statistics.median(t),
                        f"{name}_tokens_per_s": a.tokens / statistics.median(t)})
        if theirs:
            res.update({"fla_seconds": theirs, "fla_median": statistics.median(theirs),
                        "fla_tokens_per_s": a.tokens / statistics.median(theirs)})
            for name in times:
                res[f"{name}_speedup_vs_fla"] = res["fla_median"] / res[f"{name}_median"]
        return res
    step(report, "speed", speed)

    def agreement():
        T = a.agree_tokens
        seed = int(time.time()) & 0xFFFF
        q, k, v, g, beta, h0 = make_inputs(T, a.heads, a.dim, dev, seed, True)
        o_ref, s_ref = recurrence_f64(q, k, v, g, beta, h0)
        res = {"tokens": T, "seed": seed}
        try:
            o, s = ours_forward(a, q, k, v, g, beta, h0)
            res.update({"ours_o": rel_fro(o, o_ref), "ours_state": rel_fro(s, s_ref)})
        except Exception as e:  # fla's agreement is still worth having
            res["ours_error"] = f"{type(e).__name__}: {e}"
            res["ours_o"] = res["ours_state"] = {"rel_fro": float("nan")}
        if fla is not None:
            with torch.no_grad():
                fo, fs = fla(q, k, v, g, beta, h0)
            res["fla_o"] = rel_fro(fo, o_ref)
            res["fla_state"] = rel_fro(fs, s_ref)
        worst = max(res["ours_o"].get("rel_fro", float("nan")),
                    res["ours_state"].get("rel_fro", float("nan")))
        res["ours_within_1e-2"] = bool(worst <= 1e-2)  # False for NaN too
        return res
    step(report, "agreement", agreement)

    # DESIGN.md section 6: per head and token 6d^2 + 8Cd FLOP (state products and
    # chunk products, C = 64) and q, k, v in and o out in bf16 plus f32 g and beta.
    ceil = report.get("ceilings", {})
    speed_res = report.get("speed", {})
    if "bf16_flop_per_s" in ceil and "ours_median" in speed_res:
        ht = a.tokens * a.heads
        flop = ht * (6 * a.dim**2 + 8 * CHUNK * a.dim)
        byts = ht * (4 * a.dim * 2 + 2 * 4)
        t_flop = flop / ceil["bf16_flop_per_s"]
        t_mem = byts / ceil["copy_bytes_per_s"]
        floor = max(t_flop, t_mem)
        report["floor"] = {"flop": flop, "bytes": byts, "seconds_flop": t_flop,
                           "seconds_memory": t_mem, "seconds": floor}
        for name in ("ours", "ours_bf16_fast"):
            if f"{name}_median" in speed_res:
                report["floor"][f"{name}_fraction_of_floor"] = floor / speed_res[f"{name}_median"]

    print_table(report)
    line = json.dumps(report)
    if a.json_out:
        with open(a.json_out, "w") as f:
            f.write(line + "\n")
    print(line)
    ok = report.get("agreement", {}).get("ours_within_1e-2") is True and "error" not in report.get("speed", {"error": 1})
    return 0 if ok else 1


def print_table(r):
    print(f"device: {r['device']}; torch {r['torch']}; fla {r['fla']}: {r.get('fla_op')}")
    c = r.get("ceilings", {})
    if "copy_bytes_per_s" in c:
        print(f"ceilings: copy {c['copy_bytes_per_s'] / 1e12:.2f} TB/s, bf16 matmul {c['bf16_flop_per_s'] / 1e12:.0f} TFLOP/s")
    s = r.get("speed", {})
    f = r.get("floor", {})
    for name in ("ours", "ours_bf16_fast", "fla"):
        if f"{name}_median" not in s:
            continue
        line = (f"{name:<19} {s[f'{name}_median'] * 1e3:8.3f} ms  {s[f'{name}_tokens_per_s'] / 1e6:7.1f} M tokens/s"
                f"  runs {[round(x * 1e3, 3) for x in s[f'{name}_seconds']]}")
        if f"{name}_speedup_vs_fla" in s:
            line += f"  {s[f'{name}_speedup_vs_fla']:.2f}x fla (goal >= 1.5x)"
        if f"{name}_fraction_of_floor" in f:
            line += f"  {100 * f[f'{name}_fraction_of_floor']:.1f}% of floor (goal >= 60%)"
        print(line)
    if "seconds" in f:
        print(f"floor: {f['seconds'] * 1e3:.3f} ms (flop {f['seconds_flop'] * 1e3:.3f}, memory {f['seconds_memory'] * 1e3:.3f})")
    ag = r.get("agreement", {})
    if "ours_o" in ag:
        line = f"agreement at T={ag['tokens']} vs float64: ours o {ag['ours_o']}, state {ag['ours_state']}"
        if "fla_o" in ag:
            line += f"; fla o {ag['fla_o']}, state {ag['fla_state']}"
        print(line)
    for name in ("fla_op", "ceilings", "speed", "agreement"):
        v = r.get(name)
        if isinstance(v, dict) and "error" in v:
            print(f"{name}: FAILED: {v['error']}")


if __name__ == "__main__":
    sys.exit(main())
