#!/usr/bin/env python3
"""Assembles every embedded PTX with `ptxas -arch=sm_90 -v` and prints, per kernel,
registers, shared memory and spill bytes. Exits non-zero if a forward-path kernel
spills (or ptxas fails).

usage: ptxas-report.py PTXAS PTX_DIR
The PTX files are the ones build.rs embedded (OUT_DIR of the ltm-engine build script).
"""
import re
import subprocess
import sys
from pathlib import Path

# Entry points on the forward path: none of them may spill.
FORWARD = re.compile(r"^(ltm_(chunk_prep|scan|segment_maps)_(f32|f16|bf16)(_fast)?(_k256)?|ltm_step_(f32|f16|bf16)|ltm_segment_combine(_k256)?|ltm_lm_\w+)$")
SCAN = re.compile(r"^ltm_(scan|segment_maps)_(f32|f16|bf16)(_fast)?(_k256)?$")


def scan_dynamic_smem(ptx: str):
    """Dynamic shared memory of the scan kernels, from `ltm_scan_layout`: (narrow, wide),
    its 5th and 8th ints."""
    m = re.search(r"ltm_scan_layout\[32\] = \{([^}]*)\}", ptx)
    if not m:
        return None
    raw = bytes(int(x) for x in m.group(1).split(","))
    raw = raw + bytes(32 - len(raw))
    return int.from_bytes(raw[16:20], "little"), int.from_bytes(raw[28:32], "little")


def main():
    ptxas, ptx_dir = sys.argv[1], Path(sys.argv[2])
    files = sorted(ptx_dir.glob("*.ptx"))
    if not files:
        print(f"no PTX in {ptx_dir}", file=sys.stderr)
        return 1
    rows, failed = [], False
    for f in files:
        text = f.read_text()
        dyn = scan_dynamic_smem(text)
        run = subprocess.run([ptxas, "-arch=sm_90", "-v", str(f), "-o", "/dev/null"],
                             capture_output=True, text=True)
        if run.returncode != 0:
            print(f"ptxas failed on {f.name}:\n{run.stderr}", file=sys.stderr)
            failed = True
            continue
        name = None
        info = {}
        for line in run.stderr.splitlines():
            m = re.search(r"Compiling entry function '(\w+)'", line)
            if m:
                name = m.group(1)
                info[name] = {"regs": 0, "smem": 0, "spill_st": 0, "spill_ld": 0, "stack": 0}
                continue
            if name is None:
                continue
            m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m:
                info[name].update(stack=int(m.group(1)), spill_st=int(m.group(2)), spill_ld=int(m.group(3)))
            m = re.search(r"Used (\d+) registers", line)
            if m:
                info[name]["regs"] = int(m.group(1))
                s = re.search(r"(\d+) bytes smem", line)
                info[name]["smem"] = int(s.group(1)) if s else 0
        for kernel, i in sorted(info.items()):
            dynamic = 0
            if dyn and SCAN.match(kernel):
                dynamic = dyn[1] if kernel.endswith("_k256") else dyn[0]
            rows.append((f.stem, kernel, i, dynamic))
    print(f"{'module':<13} {'kernel':<32} {'regs':>5} {'static smem':>12} {'dyn smem':>9} {'stack':>6} {'spill st/ld':>12}  forward path")
    for module, kernel, i, dynamic in rows:
        fwd = bool(FORWARD.match(kernel))
        spills = i["spill_st"] + i["spill_ld"]
        flag = "yes" + ("  SPILLS" if spills else "") if fwd else "no"
        print(f"{module:<13} {kernel:<32} {i['regs']:>5} {i['smem']:>12} {dynamic:>9} {i['stack']:>6} "
              f"{str(i['spill_st']) + '/' + str(i['spill_ld']):>12}  {flag}")
        if fwd and spills:
            failed = True
    if failed:
        print("ptxas report: FAILED (a forward-path kernel spills, or ptxas failed)", file=sys.stderr)
        return 1
    print(f"ptxas report: {len(rows)} kernels assembled for sm_90, no forward-path spills")
    return 0


if __name__ == "__main__":
    sys.exit(main())
