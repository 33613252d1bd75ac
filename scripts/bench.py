#!/usr/bin/env python3
"""egress-probe speed and memory figures, printed (no pass/fail: targets live here, not in tests).

Loopback only, every loop bounded in count and time. Measures, with the given build:
  1. `check --demo` wall time over RUNS runs, against its slowest probe (concurrency check),
     and the peak RSS of a check run;
  2. the daemon (`run --demo`): RSS and threads when idle after the first round, /metrics
     scrape latency, then REQUESTS blackbox-style /probe runs per probe kind (the demo's
     TURN/ICE/WebSocket probes, which open and release sockets and allocations) and the RSS
     and fd count afterwards: growth there would be a leak.
"""
import json, os, signal, socket, statistics, subprocess, sys, time, urllib.request

BIN = sys.argv[1]
RUNS = int(os.environ.get("RUNS", "10"))
REQUESTS = int(os.environ.get("REQUESTS", "100"))


def ms(s):
    return f"{s * 1000:.1f} ms"


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1]
    return "?"


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def check_runs():
    walls, slowest, peaks, probing = [], [], [], []
    for _ in range(RUNS):
        t = time.perf_counter()
        p = subprocess.Popen([BIN, "check", "--demo", "--output", "json", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = p.stdout.read(), p.stderr.read()
        # Reap it ourselves for the child's own peak RSS (RUSAGE_CHILDREN would include
        # earlier children such as the cargo build that preceded this script).
        _, status_code, usage = os.wait4(p.pid, 0)
        walls.append(time.perf_counter() - t)
        p.returncode = os.waitstatus_to_exitcode(status_code)
        if p.returncode != 0:
            sys.exit(f"check --demo failed (exit {p.returncode}): {stderr.decode()[-400:]}")
        report = json.loads(stdout)
        slowest.append(max(r["outcome"]["total_ms"] for r in report["results"]) / 1000)
        probing.append(report.get("wall_ms", 0) / 1000)
        peaks.append(usage.ru_maxrss)
    peak_kb = max(peaks)
    kinds = sorted({r["kind"] for r in report["results"]})
    print(f"check --demo ({len(report['results'])} probes, kinds {','.join(kinds)}), {RUNS} runs:")
    print(f"  wall time     median {ms(statistics.median(walls))}  min {ms(min(walls))}  max {ms(max(walls))}")
    print(f"  slowest probe median {ms(statistics.median(slowest))}")
    ratios = [w / s for w, s in zip(probing, slowest)]
    print(f"  probing wall (report wall_ms) median {ms(statistics.median(probing))}: {statistics.median(ratios):.2f}x the slowest probe")
    print(f"  process wall / slowest probe: {statistics.median([w / s for w, s in zip(walls, slowest)]):.2f}x (adds process start and the responder's start-up)")
    print(f"  peak RSS of a check run: {peak_kb / 1024:.1f} MiB")


def get(url, timeout=30):
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read()
        return r.status, body, time.perf_counter() - t


def daemon():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    base = f"http://127.0.0.1:{port}"
    p = subprocess.Popen([BIN, "run", "--demo", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 30
        while time.time() < end:
            try:
                if get(base + "/ready", 2)[0] == 200:
                    break
            except Exception:
                time.sleep(0.05)
        else:
            sys.exit("daemon did not become ready in 30 s")
        time.sleep(1)
        print(f"run --demo (daemon + embedded responder in one process):")
        print(f"  idle after first round: RSS {int(status(p.pid, 'VmRSS')) / 1024:.1f} MiB, threads {status(p.pid, 'Threads')}, fds {fds(p.pid)}")
        scrapes = [get(base + "/metrics")[2] for _ in range(20)]
        size = len(get(base + "/metrics")[1])
        print(f"  /metrics scrape: median {ms(statistics.median(scrapes))} over 20, {size / 1024:.1f} KiB")
        status_doc = json.loads(get(base + "/status")[1])
        names = [e.get("name") or e.get("probe") for e in (status_doc if isinstance(status_doc, list) else status_doc.get("probes", []))]
        modules = [n for n in names if n and any(k in n for k in ("turn-udp", "turn-tls", "wss", "ice"))] or ["demo-turn-udp"]
        rss0, fd0 = int(status(p.pid, "VmRSS")), fds(p.pid)
        deadline = time.time() + 120
        for m in modules:
            times, ok = [], 0
            for _ in range(REQUESTS):
                if time.time() > deadline:
                    break
                code, body, dt = get(f"{base}/probe?module={m}")
                times.append(dt)
                ok += b"probe_success 1" in body
            print(f"  /probe?module={m}: {ok}/{len(times)} passed, median {ms(statistics.median(times))}, p90 {ms(sorted(times)[int(len(times) * 0.9) - 1])}")
        time.sleep(2)
        rss1, fd1 = int(status(p.pid, "VmRSS")), fds(p.pid)
        print(f"  after those runs: RSS {rss1 / 1024:.1f} MiB ({(rss1 - rss0) / 1024:+.1f} MiB), fds {fd1} ({fd1 - fd0:+d})")
        t = time.perf_counter()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=10)
        print(f"  SIGTERM → exit {rc} in {ms(time.perf_counter() - t)}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


if __name__ == "__main__":
    print(f"binary: {BIN} ({os.path.getsize(BIN) / 1e6:.1f} MB), {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    check_runs()
    daemon()
