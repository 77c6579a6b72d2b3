#!/usr/bin/env python3
"""Shows that the kernel emulator (kernels/emu) catches what a GPU would break: each
mutation below is applied to a copy of kernels/, the emulator is built from the copy
and run on the plans Rust wrote, and the mutation must fail it. Prints the first line
that says why. The working tree is never modified.

  cargo run --release --example emu_plans -- target/emu-plans.txt
  python3 scripts/emu-mutations.py target/emu-plans.txt [--only SUBSTRING]
  cargo run --release --example emu_lm_cases -- target/emu-lm-cases.bin
  python3 scripts/emu-mutations.py --lm target/emu-lm-cases.bin [--only SUBSTRING]

Mutations: every `__syncthreads()` of column_write.cu, scan.cu, step.cu (and common.cuh)
removed one at a time, the combine's M·S term dropped, wrong indices of the wide scan,
and the step kernel's partials single-buffered and its k·q term dropped; with --lm, every barrier of the
language-model kernels (lm_*.cu, lm_common.cuh) and a few wrong indices, run by
emu/lm_check.cpp on the fixture models' cases. Not part of CI (a build per mutation);
run it after changing a kernel's barriers.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ["column_write.cu", "scan.cu", "step.cu", "common.cuh"]
LM_FILES = ["lm_common.cuh", "lm_conv.cu", "lm_head.cu", "lm_norm.cu"]
# (file, text, replacement, what): wrong indices and constants of the LM kernels.
LM_EDITS = [
    ("lm_conv.cu", "P.cache[(long long)c * W + W + s]", "P.cache[(long long)c * W + W - 1 + s]",
     "conv reads the cache one slot off"),
    ("lm_conv.cu", "h = vh / group;", "h = vh % P.heads;", "GVA: value head i reads q/k head i mod H"),
    ("lm_conv.cu", "cache[i] = r < W - 1 ? old[1 + r]", "cache[i] = r < W - 1 ? old[r]",
     "conv cache update shifts one slot short"),
    ("lm_norm.cu", "gate[h * V + j]", "gate[j]", "gated norm reads every head's gate from head 0"),
    ("lm_head.cu", "(v == bv && i < bi)", "(v == bv && i > bi)", "argmax takes the last of equals"),
    ("lm_head.cu", "(n + 1ull)", "n", "the generator's draws counted from 0"),
    ("lm_head.cu", "if ((__float_as_uint(max) & 0x7f800000u) == 0x7f800000u) {", "if (false) {",
     "sampling with logits/T overflowed walks NaN probabilities"),
]
# Wrong indices of the wide (`_k256`) scan kernels.
EDITS = [
    ("scan.cu", "load_b_rows<FAST>(s_s, L::LD_S, k0 + kk,", "load_b_rows<FAST>(s_s, L::LD_S, kk,",
     "wide scan: Q/W's second half multiplies the state's first rows"),
    ("scan.cu", "const int r0 = i * KMAX + sm0;", "const int r0 = i * 16 + sm0;",
     "wide scan: the second stripe's column write reads K's wrong rows"),
    ("scan.cu", "copy_rows(s_w, L::LD_QW, w + k0, P.kp, C, kw);", "copy_rows(s_w, L::LD_QW, w, P.kp, C, kw);",
     "wide scan: W's second half copied from its first"),
    ("scan.cu", "combine_segments<scan::KMAX_WIDE>(params)", "combine_segments<scan::KMAX>(params)",
     "ltm_segment_combine_k256 sized for 128 rows"),
]


# (file, text, replacement, what): the step kernel's one-barrier-a-token scheme and a term.
STEP_EDITS = [
    ("step.cu", "const int par = (t0 + t) & 1;", "const int par = 0;",
     "warp partials single-buffered (one barrier a token no longer enough)"),
    ("step.cu", "kq += kt[row] * qt[row];", "/* mutation */", "the k·q term of the output dropped"),
]


def barriers_removed(files):
    """Each `__syncthreads()` of each file removed, one at a time."""
    for name in files:
        text = open(os.path.join(ROOT, "kernels", name)).read()
        for m in re.finditer(r"__syncthreads\(\);", text):
            line = text.count("\n", 0, m.start()) + 1
            src = text.splitlines()[line - 1].strip()
            yield (f"{name}:{line} barrier removed ({src})", name,
                   text[: m.start()] + "/* mutation */;" + text[m.end():])


def edited(edits):
    """Each (file, text, replacement, what) applied alone; the text must occur once."""
    for name, old, new, what in edits:
        text = open(os.path.join(ROOT, "kernels", name)).read()
        assert text.count(old) == 1, f"{name}: `{old}` moved: update this script"
        yield (f"{name}: {what}", name, text.replace(old, new, 1))


def lm_mutations():
    yield from barriers_removed(LM_FILES)
    yield from edited(LM_EDITS)


def mutations():
    yield from barriers_removed(FILES)
    name = "scan.cu"
    text = open(os.path.join(ROOT, "kernels", name)).read()
    term = "for (int j = 0; j < K; ++j) acc += m_row[j] * s_s[j * (DV + 1) + lc];"
    assert text.count(term) == 1, "the combine's M·S loop moved: update this script"
    line = text.count("\n", 0, text.index(term)) + 1
    yield (f"{name}:{line} combine without M·S", name, text.replace(term, "/* mutation */"))
    yield from edited(EDITS + STEP_EDITS)


def why(output):
    """The first two lines that say what failed, in the order the emulator printed them."""
    pats = ("FAULT", "race", "guard values", "FAILED", "error", "ERROR")
    lines = [l.strip() for l in output.splitlines()
             if any(p in l for p in pats) and not l.rstrip().endswith(" ok")]
    if not lines:
        lines = output.strip().splitlines()[-1:] or ["(no output)"]
    return "\n          ".join(lines[:2])


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    lm = "--lm" in args
    args = [a for a in args if a != "--lm"]
    plans = os.path.abspath(args[0])
    only = args[args.index("--only") + 1] if "--only" in args else ""
    check = "lm_check.cpp" if lm else "check.cpp"
    survived = 0
    for title, name, mutated in (lm_mutations() if lm else mutations()):
        if only not in title:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            kdir = os.path.join(tmp, "kernels")
            shutil.copytree(os.path.join(ROOT, "kernels"), kdir)
            open(os.path.join(kdir, name), "w").write(mutated)
            exe = os.path.join(tmp, "emu")
            subprocess.run(["g++", "-O2", "-std=c++17", "-o", exe, os.path.join(kdir, "emu", check)],
                           check=True)
            r = subprocess.run([exe, plans, "--seed", "1", "--orders", "6", "--fail-fast"],
                               capture_output=True, text=True)
            out = r.stdout + r.stderr
            if r.returncode == 0:
                survived += 1
                print(f"SURVIVED  {title}", flush=True)
            else:
                print(f"caught    {title}\n          {why(out)}", flush=True)
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
