#!/usr/bin/env python3
"""Summarise a timeline written by a trace build (cmake -DZMLX_CUDA_TRACE=ON,
then any zmlx command with ZMLX_CUDA_TRACE=FILE; src/cuda/NOTES.md v17).

  scripts/trace-summary.py FILE [GRAPH]

For the last replay of each graph (or of graph GRAPH): its span, and per
kernel name the count, blocks, mean chain cost (the next kernel's first
release from its PDL wait minus its own: what the kernel cost the chain),
total, and the mean spread of its blocks' releases; then each kernel's marks
(zcu_trace_mark in the kernel: thread 0 of each block stamps a phase's end)
as the mean over its launches of the median and of the latest block, us after
the kernel's first release. Names are cut to the function and its template
arguments."""
import re, sys, collections
path = sys.argv[1]
want = int(sys.argv[2]) if len(sys.argv) > 2 else None
replays = {}  # graph -> (header, rows) of its last replay
cur = None
for line in open(path):
    if line.startswith('#'):
        m = re.match(r'# graph (\d+) replay (\d+)', line)
        cur = int(m.group(1))
        replays[cur] = (line.strip(), [])
    elif line.startswith('m ') and cur is not None and replays[cur][1]:
        _, mid, n, p50, mx = line.split()
        replays[cur][1][-1][5].append((int(mid), float(p50), float(mx)))
    elif cur is not None:
        k, blocks, arrive, first, last, name = line.rstrip('\n').split(' ', 5)
        replays[cur][1].append((int(blocks), float(arrive), float(first), float(last), name, []))
def short(n):
    n = re.sub(r'\(.*$', '', n)
    n = n.replace('__nv_bfloat16', 'bf16').replace('(zmlx_router_kind)', '')
    return n[:70]
for g, (hdr, rows) in sorted(replays.items()):
    if want is not None and g != want: continue
    if not rows: print(hdr); continue
    print(hdr)
    span = rows[-1][3] - rows[0][2]
    agg = collections.OrderedDict()
    marks = collections.OrderedDict()  # name -> id -> [count, sum p50, sum max]
    for i, r in enumerate(rows):
        for mid, p50, mx in r[5]:
            m = marks.setdefault(short(r[4]), {}).setdefault(mid, [0, 0.0, 0.0])
            m[0] += 1; m[1] += p50; m[2] += mx
        nxt = rows[i + 1][2] if i + 1 < len(rows) else r[3]
        cost = nxt - r[2]
        a = agg.setdefault(short(r[4]), [0, 0.0, r[0], 0.0])
        a[0] += 1; a[1] += cost; a[3] += r[3] - r[2]
    print(f"  span of the replay: {span:.1f} us over {len(rows)} kernels")
    print(f"  {'kernel':70s} {'n':>4s} {'blocks':>6s} {'chain us (mean)':>15s} {'total us':>9s} {'release spread':>14s}")
    for name, (n, tot, blocks, spread) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:70s} {n:4d} {blocks:6d} {tot / n:15.2f} {tot:9.1f} {spread / n:14.2f}")
    if marks:
        print(f"  marks: {'kernel':70s} id: median / latest block, us after its first release")
        for name, ids in marks.items():
            cells = '  '.join(f"{mid}: {p / n:.2f} / {x / n:.2f}" for mid, (n, p, x) in sorted(ids.items()))
            print(f"  {name:70s} {cells}")
