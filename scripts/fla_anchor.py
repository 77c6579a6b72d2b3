#!/usr/bin/env python3
"""CPU anchor benchmark: ltm-engine's gated delta rule forward against
flash-linear-attention's pure-PyTorch reference `naive_chunk_gated_delta_rule`.

Set up the environment with `bash scripts/setup-anchor.sh`, then e.g.

    .venv-anchor/bin/python scripts/fla_anchor.py                 # full run
    .venv-anchor/bin/python scripts/fla_anchor.py --self-check    # harness test, no binary

What it does:
  a. makes seeded random float32 inputs (layout q,k [B,T,H,K], v [B,T,H,V],
     beta,g [B,T,H], initial_state [B,H,K,V]) and saves them to
     <tmpdir>/in.safetensors under those names;
  b. times fla's naive_chunk_gated_delta_rule on CPU (no_grad, one warm-up,
     median of --repeats) with the initial state and output_final_state=True;
  c. runs `BINARY kernel --input in.safetensors --output out.safetensors --json`
     --repeats times, reads `forward_seconds` from its JSON on stdout (median),
     and reads `o` [B,T,H,V] and `final_state` [B,H,K,V] from out.safetensors;
  d. compares them with fla's outputs (max |err| / max |ref|) and prints a table.

With --self-check (default T=1000, not a multiple of the chunk size) the
"other side" is fla's own naive_recurrent_gated_delta_rule, run through the same
file round trip, so steps a, b and d can be tested without the Rust binary.

Conventions of fla 0.6.0 (fla/ops/gated_delta_rule/naive.py), which the engine
must match: per head, with S [K,V], scale = 1/sqrt(K) by default,
    S_t = exp(g_t) * S_{t-1}
    S_t = S_t + k_t (beta_t * (v_t - S_t^T k_t))^T
    o_t = S_t^T (scale * q_t)
i.e. g is a log-decay (<= 0) applied before the delta-rule update.
"""

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        f"fla_anchor: missing Python package ({e}).\n"
        f"Run `bash scripts/setup-anchor.sh` and use {REPO}/.venv-anchor/bin/python."
    )


# --------------------------------------------------------------------------
# fla loading
# --------------------------------------------------------------------------

def load_fla_naive():
    """Load fla/ops/gated_delta_rule/naive.py by file path.

    Importing it as `fla.ops.gated_delta_rule.naive` runs fla/ops/__init__.py,
    which imports every Triton kernel (slow, warns on CPU); the naive file only
    needs torch and einops.
    """
    spec = importlib.util.find_spec("fla")
    if spec is None or spec.origin is None:
        sys.exit("fla_anchor: package fla (fla-core) is not installed; run scripts/setup-anchor.sh")
    path = os.path.join(os.path.dirname(spec.origin), "ops", "gated_delta_rule", "naive.py")
    if not os.path.isfile(path):
        sys.exit(f"fla_anchor: {path} not found in the installed fla")
    mspec = importlib.util.spec_from_file_location("fla_gdr_naive", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    try:
        from importlib.metadata import version
        ver = version("fla-core")
    except Exception:
        try:
            from importlib.metadata import version
            ver = version("flash-linear-attention")
        except Exception:
            ver = "unknown"
    return mod, path, ver


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------

def make_inputs(B, T, H, K, V, seed):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32)

    q = F.normalize(randn(B, T, H, K), p=2.0, dim=-1)
    k = F.normalize(randn(B, T, H, K), p=2.0, dim=-1)
    v = randn(B, T, H, V)
    beta = torch.sigmoid(randn(B, T, H))
    g = F.logsigmoid(randn(B, T, H)) / 16.0
    initial_state = 0.1 * randn(B, H, K, V)
    return {
        "q": q.contiguous(),
        "k": k.contiguous(),
        "v": v.contiguous(),
        "beta": beta.contiguous(),
        "g": g.contiguous(),
        "initial_state": initial_state.contiguous(),
    }


# --------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------

def time_torch(fn, repeats, warmup=1):
    with torch.no_grad():
        for _ in range(warmup):
            out = fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return out, times


def rel_err(ours, ref):
    ours = ours.detach().to(torch.float64)
    ref = ref.detach().to(torch.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"shape mismatch: got {tuple(ours.shape)}, reference {tuple(ref.shape)}")
    denom = ref.abs().max().item()
    err = (ours - ref).abs().max().item()
    finite = bool(torch.isfinite(ours).all().item())
    return {
        "max_abs_err": err,
        "max_abs_ref": denom,
        "rel_max_err": err / denom if denom > 0 else float("inf"),
        "all_finite": finite,
    }


def parse_json_stdout(text):
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON object found on stdout:\n" + text[-2000:])


# --------------------------------------------------------------------------
# the "other" side
# --------------------------------------------------------------------------

def run_engine(binary, in_path, out_path, repeats, extra_args, timeout):
    # One process: the engine does one untimed warm-up and `repeats` timed forwards
    # and reports their median, as the torch side does in-process.
    cmd = [binary, "kernel", "--input", in_path, "--output", out_path, "--json",
           "--repeats", str(repeats), *extra_args]
    runs = []
    for i in range(1):
        if os.path.exists(out_path):
            os.remove(out_path)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.stderr.write(p.stderr[-4000:])
            sys.exit(f"fla_anchor: `{' '.join(cmd)}` exited with {p.returncode}")
        try:
            rep = parse_json_stdout(p.stdout)
        except ValueError:
            sys.stderr.write(p.stderr[-4000:])
            sys.exit(f"fla_anchor: `{' '.join(cmd)}` printed no JSON object on stdout "
                     f"(stdout was {len(p.stdout)} chars: {p.stdout[-500:]!r}); "
                     f"does this build implement the `kernel` subcommand?")
        if not os.path.isfile(out_path):
            sys.exit(f"fla_anchor: the engine exited 0 but wrote no {out_path}")
        if "forward_seconds" not in rep:
            sys.exit(f"fla_anchor: engine JSON has no forward_seconds: {rep}")
        rep["_wall_seconds"] = wall
        runs.append(rep)
        for j, s in enumerate(rep.get("forward_seconds_all", [rep["forward_seconds"]])):
            print(f"  ltm-engine run {j + 1}/{repeats}: forward {s:.4f} s", flush=True)
        print(f"  (one process, wall {wall:.3f} s including file I/O and warm-up)", flush=True)
    return {"command": cmd, "runs": runs,
            "forward_seconds": runs[0].get("forward_seconds_all", [runs[0]["forward_seconds"]])}


def run_recurrent_via_files(naive, in_path, out_path, repeats, scale):
    """Self-check stand-in for the engine: fla's naive_recurrent, same file round trip."""
    t = load_file(in_path)
    fn = lambda: naive.naive_recurrent_gated_delta_rule(
        t["q"], t["k"], t["v"], t["beta"], t["g"], scale=scale,
        initial_state=t["initial_state"], output_final_state=True)
    (o, S), times = time_torch(fn, repeats, warmup=0)
    save_file({"o": o.contiguous(), "final_state": S.contiguous()}, out_path)
    for i, s in enumerate(times):
        print(f"  naive_recurrent run {i + 1}/{repeats}: {s:.4f} s", flush=True)
    return {"command": ["<in-process fla naive_recurrent_gated_delta_rule>"],
            "runs": [{"forward_seconds": s} for s in times], "forward_seconds": times}


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/ltm-engine",
                    help="ltm-engine binary (relative paths: cwd first, then the repo root)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dim-k", type=int, default=64)
    ap.add_argument("--dim-v", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=None,
                    help="sequence length T (default 65536; 1000 with --self-check)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, default=64, help="fla naive_chunk chunk size")
    ap.add_argument("--json-out", default=None, help="write all results to this JSON file")
    ap.add_argument("--self-check", action="store_true",
                    help="no binary: compare naive_chunk with fla's naive_recurrent through the same harness")
    ap.add_argument("--fla-only", action="store_true", help="only time fla (no binary needed)")
    ap.add_argument("--engine-arg", action="append", default=[],
                    help="extra argument appended to the engine command (repeatable)")
    ap.add_argument("--engine-timeout", type=float, default=3600.0, help="seconds per engine run")
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="pass if max|err|/max|ref| <= tol for o and final_state (exit 1 otherwise)")
    ap.add_argument("--workdir", default=None,
                    help="keep in/out.safetensors here instead of a deleted temp dir")
    args = ap.parse_args()

    T = args.tokens if args.tokens is not None else (1000 if args.self_check else 65536)
    B, H, K, V = args.batch, args.heads, args.dim_k, args.dim_v
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    scale = 1.0 / (K ** 0.5)  # fla's default; passed explicitly to both fla functions

    binary = None
    if not (args.self_check or args.fla_only):
        cand = args.binary
        if not os.path.isabs(cand) and not os.path.exists(cand):
            cand = os.path.join(REPO, cand)
        if not (os.path.isfile(cand) and os.access(cand, os.X_OK)):
            sys.stderr.write(
                f"fla_anchor: ltm-engine binary not found or not executable: {args.binary}\n"
                f"  build it with `cargo build --release` (expected at {os.path.join(REPO, 'target/release/ltm-engine')}),\n"
                f"  or pass --binary PATH; use --self-check to test the harness without it,\n"
                f"  or --fla-only to time fla alone.\n")
            sys.exit(2)
        binary = os.path.abspath(cand)

    t_imp = time.perf_counter()
    naive, naive_path, fla_ver = load_fla_naive()
    t_imp = time.perf_counter() - t_imp

    print(f"fla {fla_ver} naive reference: {naive_path}")
    print(f"torch {torch.__version__}, threads {threads}, python {platform.python_version()}, "
          f"{platform.machine()} cpus={os.cpu_count()}")
    print(f"shapes: B={B} T={T} H={H} K={K} V={V}, float32, scale={scale:.6g}, "
          f"chunk_size={args.chunk_size}, seed={args.seed}", flush=True)

    tmp_owned = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="fla_anchor_") if tmp_owned else args.workdir
    os.makedirs(workdir, exist_ok=True)
    in_path = os.path.join(workdir, "in.safetensors")
    out_path = os.path.join(workdir, "out.safetensors")
    try:
        # a. inputs
        inputs = make_inputs(B, T, H, K, V, args.seed)
        save_file(inputs, in_path, metadata={
            "layout": "q,k [B,T,H,K]; v [B,T,H,V]; beta,g [B,T,H]; initial_state [B,H,K,V]",
            "scale": repr(scale), "seed": str(args.seed), "generator": "fla_anchor.py"})
        print(f"inputs: {in_path} ({os.path.getsize(in_path) / 2**20:.1f} MiB)", flush=True)

        # b. fla naive_chunk
        x = load_file(in_path)  # time and compare on exactly what the other side reads
        fla_fn = lambda: naive.naive_chunk_gated_delta_rule(
            x["q"], x["k"], x["v"], x["g"], x["beta"], chunk_size=args.chunk_size, scale=scale,
            initial_state=x["initial_state"], output_final_state=True)
        print(f"timing fla naive_chunk_gated_delta_rule (1 warm-up + {args.repeats})...", flush=True)
        (ref_o, ref_S), fla_times = time_torch(fla_fn, args.repeats, warmup=1)
        for i, s in enumerate(fla_times):
            print(f"  naive_chunk run {i + 1}/{args.repeats}: {s:.4f} s", flush=True)
        fla_med = statistics.median(fla_times)

        # c. the other side
        other = None
        if args.self_check:
            other_name = "fla naive_recurrent (torch CPU)"
            print("self-check: running fla naive_recurrent_gated_delta_rule via the file round trip...", flush=True)
            other = run_recurrent_via_files(naive, in_path, out_path, args.repeats, scale)
        elif binary is not None:
            other_name = "ltm-engine"
            print(f"running {binary} kernel x{args.repeats}...", flush=True)
            other = run_engine(binary, in_path, out_path, args.repeats, args.engine_arg, args.engine_timeout)

        # d. compare + report
        n_tok = B * T
        result = {
            "fla_version": fla_ver, "fla_naive_path": naive_path,
            "torch_version": torch.__version__, "torch_threads": threads,
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "shapes": {"B": B, "T": T, "H": H, "K": K, "V": V},
            "dtype": "float32", "scale": scale, "chunk_size": args.chunk_size, "seed": args.seed,
            "fla_import_seconds": t_imp,
            "fla_naive_chunk": {"seconds": fla_times, "median_seconds": fla_med,
                                "tokens_per_second": n_tok / fla_med},
        }
        ok = True
        if other is not None:
            outs = load_file(out_path)
            missing = [n for n in ("o", "final_state") if n not in outs]
            if missing:
                sys.exit(f"fla_anchor: {out_path} lacks tensors {missing}; has {sorted(outs)}")
            cmp_o = rel_err(outs["o"], ref_o)
            cmp_S = rel_err(outs["final_state"], ref_S)
            ok = all(c["all_finite"] and c["rel_max_err"] <= args.tol for c in (cmp_o, cmp_S))
            med = statistics.median(other["forward_seconds"])
            other_res = {"name": other_name, "command": other["command"], "runs": other["runs"],
                         "forward_seconds": other["forward_seconds"], "median_forward_seconds": med,
                         "tokens_per_second": n_tok / med,
                         "compare_o": cmp_o, "compare_final_state": cmp_S,
                         "tol": args.tol, "pass": ok}
            reported = [r.get("tokens_per_second") for r in other["runs"]
                        if isinstance(r.get("tokens_per_second"), (int, float))]
            if reported:
                other_res["reported_tokens_per_second_median"] = statistics.median(reported)
            result["self_check" if args.self_check else "ltm_engine"] = other_res
            result["speedup_vs_fla_naive_chunk"] = fla_med / med

        print()
        print(f"torch {torch.__version__} | threads {threads} | B={B} T={T} H={H} K={K} V={V} float32")
        print(f"{'implementation':<36} {'median s':>10} {'tokens/s':>14} {'vs fla':>8}")
        print(f"{'fla naive_chunk (torch CPU)':<36} {fla_med:>10.4f} {n_tok / fla_med:>14,.0f} {1.0:>7.2f}x")
        if other is not None:
            print(f"{other_name:<36} {med:>10.4f} {n_tok / med:>14,.0f} {fla_med / med:>7.2f}x")
            print()
            for nm, c in (("o", cmp_o), ("final_state", cmp_S)):
                print(f"{nm:<12} max|err|/max|ref| = {c['rel_max_err']:.3e}  "
                      f"(max|err| {c['max_abs_err']:.3e}, max|ref| {c['max_abs_ref']:.3e}"
                      f"{'' if c['all_finite'] else ', NON-FINITE VALUES'})")
            print(f"{'PASS' if ok else 'FAIL'} (tol {args.tol:g})")
        else:
            print("(fla only: no other side was run)")

        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(result, f, indent=2)
            print(f"wrote {args.json_out}")
        return 0 if ok else 1
    finally:
        if tmp_owned:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
