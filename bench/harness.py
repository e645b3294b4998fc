"""What every benchmark workload shares: reading sluice's metrics, the process's peak RSS and CPU
time, timing a run until a number of rows is committed to the lake, and a steady load."""
import os
import subprocess
import sys
import time

ADDR = "127.0.0.1:9291"


def metric(addr, name):
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=1).read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_until_committed(sluice, config, log, rows_wanted, workdir):
    """Start sluice and time it until `rows_wanted` rows are committed to the lake; returns
    (seconds, peak RSS in kB, CPU seconds). The process is stopped afterwards."""
    t0 = time.monotonic()
    p = subprocess.Popen([sluice, "run", "--config", config], stderr=log)
    rows = 0.0
    while rows < rows_wanted:
        if p.poll() is not None:
            sys.exit(f"sluice exited early; see {workdir}/sluice.log")
        rows = metric(ADDR, 'sluice_sink_rows_total{zone="raw"') or 0.0
        time.sleep(0.02)
    secs = time.monotonic() - t0
    rss_kb, cpu = peak_rss_kb(p.pid), cpu_seconds(p.pid)
    p.terminate()
    p.wait()
    return secs, rss_kb, cpu




def steady_inserts(url, rate, seconds, per_tx=100):
    """Insert `rate` rows/s for `seconds` into `bench (id, v, note)` at `url` (Postgres), in
    transactions of `per_tx` rows on a fixed schedule; returns the rate achieved."""
    import psycopg
    total = rate * seconds
    with psycopg.connect(url) as conn:
        start = time.monotonic()
        for i in range(0, total, per_tx):
            conn.execute(f"INSERT INTO bench SELECT g, 1, 'x' FROM generate_series({i}, {i + per_tx - 1}) g")
            conn.commit()
            ahead = start + (i + per_tx) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        return total / (time.monotonic() - start)
