#!/usr/bin/env python3
"""Driver: start a fresh server pinned to core 0, run the generator (fanout.c, built to
/tmp/natter-crosscheck by sweep.sh) pinned to core 1, kill the server.
Usage: run.py OUT.jsonl SERVER R W [--rate N] [--seconds S] [--tag T] [generator flags...]
Bun: BENCH_BUN=/path/to/bun, else `bun` on PATH.
"""
import json, os, re, resource, shutil, signal, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUN = os.environ.get("BENCH_BUN") or shutil.which("bun") or "bun"
GENERATOR = "/tmp/natter-crosscheck"

SERVERS = {
    "natter": (["taskset", "-c", "0", "deno", "run", "-A", f"{ROOT}/main.ts", "--port", "0", "--hostname",
                "127.0.0.1", "--quiet", "--rate", "1000000000", "--rate-burst", "1000000000"],
               {"MALLOC_TRIM_THRESHOLD_": "16777216"}),
    "bun": (["taskset", "-c", "0", BUN, f"{ROOT}/bench/bun-publish.js", "--port", "0"], {}),
    "probe": (["taskset", "-c", "0", "deno", "run", "-A", f"{ROOT}/bench/probe-batch.ts", "--node"], {}),
    "reference": (["taskset", "-c", "0", "deno", "run", "-A", f"{ROOT}/bench/reference.ts", "--port", "0"], {}),
}


def start(name):
    cmd, env = SERVERS[name]
    e = dict(os.environ); e.update(env)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=e, cwd="/tmp",
                         start_new_session=True)
    port = None
    lines = []
    t0 = time.time()
    while time.time() - t0 < 30:
        line = p.stdout.readline().decode(errors="replace")
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
        if m:
            port = int(m.group(1)); break
    if port is None:
        p.kill(); raise SystemExit(f"{name} did not start: {lines}")
    out = []
    def drain():
        for l in p.stdout:
            out.append(l.decode(errors="replace"))
    th = threading.Thread(target=drain, daemon=True); th.start()
    return p, port, out


def run(outfile, name, R, W, rate=0, seconds=5, tag="", extra=()):
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    p, port, out = start(name)
    try:
        time.sleep(0.3)
        cmd = ["taskset", "-c", "1", GENERATOR, "--port", str(port), "--receivers", str(R), "--window", str(W),
               "--seconds", str(seconds), "--server-pid", str(p.pid), "--label", name]
        if rate:
            cmd += ["--rate", str(rate)]
        cmd += list(extra)
        g = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        alive = p.poll() is None
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL); p.wait()
    res = None
    for line in g.stdout.splitlines():
        if line.startswith("{"):
            res = json.loads(line)
    if res is None:
        res = {"label": name, "receivers": R, "window": W, "error": g.stderr[-2000:], "rc": g.returncode}
    res["tag"] = tag
    res["server_alive_at_end"] = alive
    res["gen_stderr"] = g.stderr[-1000:]
    res["server_output_tail"] = "".join(out)[-1000:]
    with open(outfile, "a") as f:
        f.write(json.dumps(res) + "\n")
    return res


if __name__ == "__main__":
    a = sys.argv[1:]
    outfile, name, R, W = a[0], a[1], int(a[2]), int(a[3])
    rate = 0; seconds = 5; tag = ""; extra = []
    i = 4
    while i < len(a):
        if a[i] == "--rate": rate = float(a[i + 1]); i += 2
        elif a[i] == "--seconds": seconds = int(a[i + 1]); i += 2
        elif a[i] == "--tag": tag = a[i + 1]; i += 2
        else: extra.append(a[i]); i += 1
    r = run(outfile, name, R, W, rate, seconds, tag, extra)
    print(json.dumps({k: r.get(k) for k in ["label", "receivers", "window", "rate", "deliveries_per_s", "p50_us", "p99_us",
                                             "r0_lines_per_frame", "gen_cpu_share", "server_cpu_share", "server_cpu_s_per_M",
                                             "total_sent", "expected", "counted", "lost", "dup", "bogus", "closes", "errors",
                                             "connect_s", "settle_s", "error"]}))
