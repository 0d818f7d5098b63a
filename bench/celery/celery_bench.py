"""The Celery side of `scripts/bench`: the same no-op as a Celery task, measured the same way.

Starts redis-server on a free loopback port (broker and result backend), a Celery worker (prefork
pool, concurrency as given) on a tasks module written to a temporary directory, waits until it
answers, then measures `noop.delay().get()`: sequential latency after a warm-up, and calls per
second with N concurrent callers (threads), with the host's CPU time per call over the
throughput measurement (all processes: client, redis, worker). Prints one JSON object on stdout
and stops everything it started. Never eager mode: every call crosses redis to the worker.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_cpu_seconds():
    # user + nice + system + irq + softirq + steal, over all CPUs, from /proc/stat.
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    ticks = [int(x) for x in fields]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + (ticks[7] if len(ticks) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def percentile(samples, p):
    s = sorted(samples)
    rank = max(1, min(len(s), int(-(-p / 100.0 * len(s) // 1))))
    return s[rank - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-server", required=True)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--throughput-calls", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="attune-celery-")
    port = free_port()
    url = "redis://127.0.0.1:%d/0" % port
    redis = subprocess.Popen(
        [args.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", work],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(work, "benchtasks.py"), "w") as f:
        f.write(
            "from celery import Celery\n"
            "app = Celery('benchtasks', broker=%r, backend=%r)\n"
            "app.conf.worker_prefetch_multiplier = 1\n"
            "@app.task\n"
            "def noop():\n"
            "    return None\n" % (url, url))
    env = dict(os.environ, PYTHONPATH=work)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "benchtasks", "worker", "--pool", "prefork",
         "--concurrency", str(args.concurrency), "--loglevel", "WARNING", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sys.path.insert(0, work)
        import benchtasks  # noqa: E402

        deadline = time.time() + 60
        while True:
            try:
                benchtasks.noop.delay().get(timeout=2)
                break
            except Exception as e:  # noqa: BLE001 - not up yet
                if time.time() > deadline:
                    raise SystemExit("the Celery worker never answered: %s" % e)
                time.sleep(0.2)
        for _ in range(args.warmup):
            benchtasks.noop.delay().get(timeout=30)
        samples = []
        for _ in range(args.calls):
            t = time.perf_counter()
            benchtasks.noop.delay().get(timeout=30)
            samples.append((time.perf_counter() - t) * 1000)

        lock = threading.Lock()
        left = [args.throughput_calls]

        def caller():
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                benchtasks.noop.delay().get(timeout=60)

        cpu0, t0 = host_cpu_seconds(), time.perf_counter()
        threads = [threading.Thread(target=caller) for _ in range(args.concurrency)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed, cpu = time.perf_counter() - t0, host_cpu_seconds() - cpu0
        import celery

        print(json.dumps({
            "celery": celery.__version__,
            "p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99),
            "calls": len(samples), "throughput_calls": args.throughput_calls,
            "throughput_per_s": args.throughput_calls / elapsed,
            "host_cpu_ms_per_call": cpu * 1000 / args.throughput_calls,
        }))
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        redis.terminate()
        redis.wait()


if __name__ == "__main__":
    main()
