#!/usr/bin/env python3
"""(The team's shared checker, kept here so CI and anyone can run it: `python3 .ci/modcycles.py src`.)
Import graph between the crate's top-level modules (src/X.rs or src/X/): prints each cycle.
Exit 0 when the graph is acyclic. Reads `crate::name` paths in non-test code."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else "src"
mods = {}
for dirpath, _, files in os.walk(root):
    for fn in files:
        if not fn.endswith(".rs"): continue
        p = os.path.join(dirpath, fn); rel = os.path.relpath(p, root)
        top = rel.split(os.sep)[0]
        top = top[:-3] if top.endswith(".rs") else top
        if top in ("lib", "main", "bin"): continue
        mods.setdefault(top, []).append(p)
edges = {m: set() for m in mods}
for m, paths in mods.items():
    for p in paths:
        text = open(p, encoding="utf-8", errors="replace").read()
        # drop #[cfg(test)] mod tests { ... } at the end of files (rough: cut at the marker)
        cut = text.find("#[cfg(test)]")
        if cut >= 0: text = text[:cut]
        text = re.sub(r"//[^\n]*", "", text)
        for other in re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text):
            if other != m and other in mods: edges[m].add(other)
        # `use crate::{a, b::c}` groups
        for grp in re.findall(r"use\s+crate::\{([^}]*)\}", text, re.S):
            for other in re.findall(r"(?:^|[,{\s])([a-z_][a-z0-9_]*)\s*(?:::|,|$|\})", grp):
                if other != m and other in mods: edges[m].add(other)
# find strongly connected components (Tarjan)
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
def strong(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in edges:
    if v not in idx: strong(v)
for comp in sccs:
    print("cycle among top-level modules:", " <-> ".join(comp))
print(f"{len(mods)} top-level modules, {sum(len(e) for e in edges.values())} edges, {len(sccs)} cycles")
sys.exit(1 if sccs else 0)
