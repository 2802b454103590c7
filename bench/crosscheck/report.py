#!/usr/bin/env python3
import json, statistics as st, collections, sys

DIR = sys.argv[1] if len(sys.argv) > 1 else '/tmp/crosscheck'

rows = [json.loads(l) for l in open(DIR + '/results-sweep.jsonl')]
pts = collections.OrderedDict()
for r in rows:
    pts.setdefault((r['receivers'], r['window']), {}).setdefault(r['label'], []).append(r)

def med(v): return st.median(v)

print("| R | W | server | deliv/s median | spread max/min | p50 ms | p99 ms | lines/frame (r0) | server CPU s / M deliv | server CPU share | gen CPU share (min–max) | lost/dup/closes |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
summary = {}
for (R, W), by in pts.items():
    for s in ['natter', 'bun', 'probe']:
        rs = by.get(s, [])
        ok = [r for r in rs if 'deliveries_per_s' in r]
        if not ok:
            print(f"| {R} | {W} | {s} | FAILED ({len(rs)} runs) |"); continue
        d = [r['deliveries_per_s'] for r in ok]
        p50 = med([r['p50_us'] for r in ok]) / 1000
        p99 = med([r['p99_us'] for r in ok]) / 1000
        lpf = med([r['r0_lines_per_frame'] for r in ok])
        cpm = med([r['server_cpu_s_per_M'] for r in ok])
        scs = med([r['server_cpu_share'] for r in ok])
        g = [r['gen_cpu_share'] for r in ok]
        bad = sum(r['lost'] for r in ok), sum(r['dup'] for r in ok), sum(r['closes'] for r in ok)
        cnt = all(r['counted'] == r['expected'] for r in ok)
        summary[(R, W, s)] = dict(rate=med(d), p50=p50, cpm=cpm)
        print(f"| {R} | {W} | {s} | {med(d)/1e6:.2f}M | {max(d)/min(d):.2f} | {p50:.2f} | {p99:.2f} | {lpf:.1f} | {cpm:.4f} | {scs:.2f} | {min(g):.2f}–{max(g):.2f} | {bad[0]}/{bad[1]}/{bad[2]}{'' if cnt else ' COUNT MISMATCH'} (n={len(ok)}) |")

print()
print("| R | W | natter/bun rate | natter/bun p50 | natter/bun CPU per M | natter/probe CPU per M | natter/probe rate |")
print("|---|---|---|---|---|---|---|")
for (R, W) in pts:
    try:
        n, b, p = summary[(R, W, 'natter')], summary[(R, W, 'bun')], summary[(R, W, 'probe')]
    except KeyError:
        continue
    print(f"| {R} | {W} | {n['rate']/b['rate']:.2f} | {n['p50']/b['p50']:.2f} | {n['cpm']/b['cpm']:.2f} | {n['cpm']/p['cpm']:.2f} | {n['rate']/p['rate']:.2f} |")

print()
print("per-run rates (M deliveries/s, rep order):")
for (R, W), by in pts.items():
    print(R, W, {s: [round(r.get('deliveries_per_s', 0)/1e6, 2) for r in by.get(s, [])] for s in ['natter', 'bun', 'probe']},
          "gen:", {s: [r.get('gen_cpu_share') for r in by.get(s, [])] for s in ['natter', 'bun', 'probe']})

for fn in ['results-validate.jsonl', 'results-latency.jsonl']:
    try:
        rows = [json.loads(l) for l in open(DIR + '/' + fn)]
    except FileNotFoundError:
        continue
    print()
    print(fn)
    for r in rows:
        print({k: r.get(k) for k in ['tag', 'label', 'receivers', 'window', 'rate', 'deliveries_per_s', 'msgs_per_s', 'p50_us', 'p99_us', 'max_us',
                                     'lat_samples', 'gen_cpu_share', 'server_cpu_share', 'server_cpu_s_per_M', 'total_sent', 'verified_receivers',
                                     'expected', 'counted', 'lost', 'dup', 'msgs_short', 'msgs_over', 'bogus', 'malformed', 'closes', 'errors']})
