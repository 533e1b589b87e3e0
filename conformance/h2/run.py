"""h2load soak: many concurrent streams per HTTP/2 connection through the proxy.

The proxy (https listener with ALPN h2, and the plain listener with HTTP/2 prior knowledge)
sits in front of a synthetic upstream (`bench upstream`). h2load sends --requests requests
over --clients connections with --streams concurrent streams each, over TLS and over h2c.
Pass: every request done with a 2xx, none failed, errored or timed out; the proxy still
running and its file descriptors back to where they were once idle upstream connections have
expired (`timeouts.idle`, 2 s here).

Usage: run.py --proxy target/debug/proxy --bench target/debug/bench
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import serve, stop_all  # noqa: E402

REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout")
CODES = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")






def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True, type=Path)
    ap.add_argument("--bench", required=True, type=Path)
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--streams", type=int, default=100)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="h2-"))
    procs = []
    failed = passed = 0
    try:
        upstream, (up,) = serve("the upstream", 1, lambda ports: [
            str(args.bench), "upstream", "--upstreams", "0ms", "--port", str(ports[0])])
        procs.append(upstream)

        def command(ports):
            http, https, admin = ports
            (work / "proxy.toml").write_text(
                f'[listen]\nhttp = "127.0.0.1:{http}"\nhttps = "127.0.0.1:{https}"\n'
                f'admin = "127.0.0.1:{admin}"\n[tls]\nself_signed = true\n'
                # Idle pooled upstream connections close after 2 s, so the descriptor count
                # can come back within the check's deadline (by default they stay for 60 s).
                # A starved machine (CI, two cores) must not turn 800 concurrent upstream
                # connects into 502s: the soak is about HTTP/2, not connect latency.
                '[timeouts]\nidle = "2s"\nconnect = "5s"\n')
            (work / "upstreams.toml").write_text(
                f'[pool.main]\nendpoints = [{{ addr = "127.0.0.1:{up}" }}]\n')
            return [str(args.proxy), "--config", str(work / "proxy.toml")]

        proxy, (http, https, _) = serve("the proxy", 3, command, ready=1,
                                        env=dict(os.environ, RUST_LOG="error"))
        procs.append(proxy)
        # Once every worker holds its copy of the listeners (a first request answered on
        # each), the count is the one to come back to.
        subprocess.run(["h2load", "-n", "100", "-c", "4", f"https://127.0.0.1:{https}/"],
                       capture_output=True, timeout=60)
        subprocess.run(["h2load", "-n", "100", "-c", "4", f"http://127.0.0.1:{http}/"],
                       capture_output=True, timeout=60)
        base_fds = len(os.listdir(f"/proc/{proxy.pid}/fd"))
        for name, url in [("h2 over TLS", f"https://127.0.0.1:{https}/"),
                          ("h2c prior knowledge", f"http://127.0.0.1:{http}/")]:
            run = subprocess.run(["h2load", "-n", str(args.requests), "-c", str(args.clients),
                                  "-m", str(args.streams), "-T", "30", url],
                                 capture_output=True, text=True, timeout=300)
            r, c = REQUESTS.search(run.stdout), CODES.search(run.stdout)
            alive = proxy.poll() is None
            ok = bool(r and c) and alive and run.returncode == 0
            if ok:
                total, done, succeeded, bad, errored, timeout = map(int, r.groups())
                ok = done == succeeded == total == args.requests and bad == errored == timeout == 0
                ok = ok and int(c.group(1)) == args.requests
            summary = next((l.strip() for l in run.stdout.splitlines() if l.startswith("finished in")), "")
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {args.requests} requests, {args.clients} "
                  f"connections x {args.streams} streams: "
                  f"{r.group(0) if r else run.stdout[-300:]}; {c.group(0) if c else ''}; {summary}")
            passed += ok
            failed += not ok
        fds_back = False
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if len(os.listdir(f"/proc/{proxy.pid}/fd")) <= base_fds + 4:
                fds_back = True
                break
            time.sleep(0.2)
        print(f"{'ok  ' if fds_back else 'FAIL'} file descriptors back: {base_fds} before, "
              f"{len(os.listdir(f'/proc/{proxy.pid}/fd'))} after")
        passed += fds_back
        failed += not fds_back
    finally:
        stop_all(procs)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
