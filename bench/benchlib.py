"""Shared pieces of vrata's benchmark drivers (bench/*/run): free ports, templates, pinned
processes, CPU accounting from /proc, wrk runs and their parsing. Python 3 standard library only."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(text, values, what):
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", str(v))
    left = re.findall(r"\{\{[A-Z_]+\}\}", text)
    if left:
        raise SystemExit(f"{what}: unfilled placeholders {sorted(set(left))}")
    return text


def render(template_path, values, out_path=None):
    with open(template_path) as f:
        text = fill(f.read(), values, template_path)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
        return out_path
    return text


def proc_cpu_ticks(pid):
    """utime+stime of a process (all its threads, live and exited), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(d))
    return out


def cpu_lines():
    """Per-core /proc/stat counters: {core: {user,nice,system,idle,iowait,irq,softirq,steal}}."""
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    res = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+)\s+(.*)", line)
            if m:
                res[int(m.group(1))] = dict(zip(names, (int(x) for x in m.group(2).split())))
    return res


def busy_s(k0, k1, core):
    return sum(k1[core][k] - k0[core][k] for k in ("user", "nice", "system")) / CLK_TCK


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, dict(r.headers), r.read()


def tail(path, n=3000):
    return open(path, errors="replace").read()[-n:] if path and os.path.exists(path) else ""


def wait_for(what, fn, timeout=30.0, proc=None, logfile=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: exited with {proc.returncode}\n{tail(logfile)}")
        try:
            if fn():
                return
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready after {timeout}s ({last})\n{tail(logfile)}")


class Proc:
    """A process we started, pinned with taskset; stopped by its own pid only."""

    def __init__(self, name, argv, core, run_dir, env=None, stdout=None):
        self.name = name
        self.logfile = os.path.join(run_dir, f"{name}.log")
        self.err = open(self.logfile, "ab")
        self.out = open(stdout, "ab") if stdout else None
        self.p = subprocess.Popen(
            ["taskset", "-c", str(core)] + argv, stdin=subprocess.DEVNULL,
            stdout=self.out or self.err, stderr=self.err, env=env, start_new_session=True)
        self.pid = self.p.pid  # taskset execs the command: same pid

    def pids(self):
        return [self.pid] + children(self.pid)

    def cpu_ticks(self):
        return sum(proc_cpu_ticks(p) for p in self.pids())

    def poll(self):
        return self.p.poll()

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        for f in (self.err, self.out):
            if f and not f.closed:
                f.close()


def parse_dur_us(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    return float(m.group(1)) * UNIT_US[m.group(2)]


def parse_wrk(out):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    r["requests"] = int(m.group(1))
    r["wrk_seconds"] = parse_dur_us(m.group(2) + m.group(3)) / 1e6
    r["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+(?:us|ms|s|m))", out, re.M)
        r[f"p{pct}_us"] = parse_dur_us(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def run_wrk(core, urls, connections, seconds, threads=1, headers=(), script=None):
    """One wrk per URL, all at once, all on `core`. Returns their outputs in order. `script`:
    a wrk Lua script (e.g. one that makes every request's path unique)."""
    hdr = []
    for h in headers:
        hdr += ["-H", h]
    if script:
        hdr += ["-s", script]
    ps = [subprocess.Popen(
        ["taskset", "-c", str(core), "wrk", "-t", str(threads), "-c", str(connections),
         "-d", f"{seconds}s", "--latency", "--timeout", "5s"] + hdr + [u],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for u in urls]
    outs = []
    for p in ps:
        out, err = p.communicate(timeout=seconds + 30)
        if p.returncode != 0:
            raise RuntimeError(f"wrk failed: {err}{out}")
        outs.append(out)
    return outs
