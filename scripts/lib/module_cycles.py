#!/usr/bin/env python3
"""Fails on any cycle between the top-level modules of src/.

A module is a file or folder directly under src/ (`src/node.rs`,
`src/http/`); an edge A -> B is a `crate::B` path in A's sources (in code,
not in comments). Prints the edges of every strongly connected component
with more than one module, and exits 1 if there is one.
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "src"
PATH = re.compile(r"\bcrate::(\w+)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)


def module_of(path):
    rel = os.path.relpath(path, SRC)
    head = rel.split(os.sep)[0]
    return head[:-3] if head.endswith(".rs") else head


def code(text):
    # Drop comments (line, doc and block) and string literals.
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"'(?:\\.|[^'\\])'", "' '", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


modules = set()
edges = {}
for root, _, files in os.walk(SRC):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(root, f)
        a = module_of(path)
        modules.add(a)
        text = code(open(path, encoding="utf-8").read())
        names = set(PATH.findall(text))
        for group in USE_GROUP.findall(text):
            names |= {m.group(1) for m in re.finditer(r"(?:^|[,{\s])(\w+)\s*(?:::|,|}|$)", group)}
        for b in names:
            if b != a and b not in ("self", "super", "crate"):
                edges.setdefault(a, {}).setdefault(b, set()).add(os.path.relpath(path, SRC))
modules -= {"lib", "main"}

# Tarjan's strongly connected components.
index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, {}):
        if w not in modules:
            continue
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        comps.append(sorted(comp))


sys.setrecursionlimit(10000)
for m in sorted(modules):
    if m not in index:
        visit(m)
cycles = [c for c in comps if len(c) > 1]
for c in cycles:
    print(f"cycle between top-level modules: {', '.join(c)}")
    for a in c:
        for b in sorted(edges.get(a, {})):
            if b in c:
                print(f"  {a} -> {b}  ({', '.join(sorted(edges[a][b]))})")
if cycles:
    sys.exit(1)
print(f"no cycles between the {len(modules)} top-level modules of {SRC}/")
