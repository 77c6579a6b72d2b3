#!/usr/bin/env python3
"""Checks that every relative link of README.md and docs/*.md resolves: the file exists
and, for `file.md#anchor`, the file has a heading with that GitHub anchor.
Usage: python3 scripts/check-doc-links.py [REPO_ROOT]"""
import re, os, glob, sys
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..')
def slug(h):
    h = h.strip().lower()
    h = re.sub(r'[^\w\- ]', '', h)   # GitHub: drop punctuation except - and _
    return h.replace(' ', '-')
def anchors(path):
    out, fence = set(), False
    for l in open(path):
        if l.startswith('```'): fence = not fence
        m = None if fence else re.match(r'^#+ (.*)', l)
        if m: out.add(slug(m.group(1)))
    return out
bad = 0; n = 0
files = [os.path.join(root, 'README.md')] + sorted(glob.glob(os.path.join(root, 'docs/*.md')))
for f in files:
    text = open(f).read()
    text_nocode = re.sub(r'```.*?```', '', text, flags=re.S)
    for m in re.finditer(r'\]\(([^)\s]+)\)', text_nocode):
        t = m.group(1)
        if re.match(r'[a-z]+://', t): continue
        n += 1
        path, _, frag = t.partition('#')
        tgt = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
        if not os.path.exists(tgt):
            print(f'{os.path.relpath(f, root)}: {t}: no such file'); bad += 1; continue
        if frag and tgt.endswith('.md') and frag not in anchors(tgt):
            print(f'{os.path.relpath(f, root)}: {t}: no such heading'); bad += 1
print(f'{n} relative links checked, {bad} broken')
sys.exit(1 if bad else 0)
