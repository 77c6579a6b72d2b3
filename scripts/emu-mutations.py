#!/usr/bin/env python3
"""Shows that the kernel emulator (kernels/emu) catches what a GPU would break: each
mutation below is applied to a copy of kernels/, the emulator is built from the copy
and run on the plans Rust wrote, and the mutation must fail it. Prints the first line
that says why. The working tree is never modified.

  cargo run --release --example emu_plans -- target/emu-plans.txt
  python3 scripts/emu-mutations.py target/emu-plans.txt [--only SUBSTRING]

Mutations: every `__syncthreads()` of column_write.cu, scan.cu (and common.cuh) removed
one at a time, and the combine's M·S term dropped. Not part of CI (a build per
mutation); run it after changing a kernel's barriers.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ["column_write.cu", "scan.cu", "common.cuh"]


def mutations():
    for name in FILES:
        text = open(os.path.join(ROOT, "kernels", name)).read()
        for m in re.finditer(r"__syncthreads\(\);", text):
            line = text.count("\n", 0, m.start()) + 1
            src = text.splitlines()[line - 1].strip()
            yield (f"{name}:{line} barrier removed ({src})", name,
                   text[: m.start()] + "/* mutation */;" + text[m.end():])
    name = "scan.cu"
    text = open(os.path.join(ROOT, "kernels", name)).read()
    term = "for (int j = 0; j < K; ++j) acc += m_row[j] * s_s[j * (DV + 1) + lc];"
    assert text.count(term) == 1, "the combine's M·S loop moved: update this script"
    line = text.count("\n", 0, text.index(term)) + 1
    yield (f"{name}:{line} combine without M·S", name, text.replace(term, "/* mutation */"))


def why(output):
    """The first two lines that say what failed, in the order the emulator printed them."""
    pats = ("FAULT", "race", "guard values", "FAILED", "error", "ERROR")
    lines = [l.strip() for l in output.splitlines() if any(p in l for p in pats)]
    if not lines:
        lines = output.strip().splitlines()[-1:] or ["(no output)"]
    return "\n          ".join(lines[:2])


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    plans = os.path.abspath(args[0])
    only = args[args.index("--only") + 1] if "--only" in args else ""
    survived = 0
    for title, name, mutated in mutations():
        if only not in title:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            kdir = os.path.join(tmp, "kernels")
            shutil.copytree(os.path.join(ROOT, "kernels"), kdir)
            open(os.path.join(kdir, name), "w").write(mutated)
            exe = os.path.join(tmp, "emu")
            subprocess.run(["g++", "-O2", "-std=c++17", "-o", exe, os.path.join(kdir, "emu", "check.cpp")],
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
