"""Differential request-smuggling suite: every case of corpus.py through the real proxy binary
to three independent origin parsers (origins.py), compared. A raw case is written to the
HTTP/1.1 listener as is; an HTTP/2 one is sent with prior knowledge, frame by frame
(`exchange_h2`), and leaves the proxy as HTTP/1.1 like any other.

A case passes when
- every request an origin parses carries the proxy's own `Via` (a request without it was
  hidden in bytes the proxy forwarded as something else: smuggled past routing and rules),
- and either the proxy refused it (every origin saw nothing and the client got only the
  proxy's 4xx/5xx answers), or every origin parsed the forwarded bytes as the same requests
  (method, target, Host, body),
- and the proxy's verdict is the one the case pins (`reject` / `forward`), if any.

Usage: run.py --proxy target/debug/proxy --venv .venv [--out DIR] [--only ID,...]
Writes DIR/results.md (per class and per case) and DIR/results.json; prints a summary and
a closing `N passed, N failed` line; exits 1 if any case failed.
"""

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import serve, stop_all  # noqa: E402

import corpus  # noqa: E402

HERE = Path(__file__).resolve().parent
ORIGINS = ["stdlib", "gunicorn", "waitress"]
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)\r\n", re.I)


def statuses(data):
    """The status of every response in `data`, read one after another by their framing."""
    out, at = [], 0
    while (m := STATUS_LINE.match(data, at)) is not None:
        out.append(int(m.group(1)))
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            break
        head = data[at:end + 2]
        at = end + 4
        length = LENGTH.search(head)
        if b"transfer-encoding: chunked" in head.lower():
            last = data.find(b"0\r\n\r\n", at)
            at = len(data) if last < 0 else last + 5
        elif length and not head.startswith((b"HTTP/1.1 304", b"HTTP/1.1 204")):
            at += int(length.group(1))
    return out






def start_origin(name, log, venv):
    """One origin server on a free port: the process and its port."""
    env = dict(os.environ, ORIGIN_LOG=str(log), ORIGIN_NAME=name, PYTHONPATH=str(HERE))

    def command(ports):
        port = ports[0]
        if name == "stdlib":
            return [sys.executable, str(HERE / "origins.py"), "stdlib", str(port)]
        if name == "gunicorn":
            return [str(venv / "bin" / "gunicorn"), "--worker-class", "gthread", "--threads",
                    "8", "--workers", "1", "--bind", f"127.0.0.1:{port}", "--log-level",
                    "critical", "origins:app"]
        return [str(venv / "bin" / "waitress-serve"), f"--listen=127.0.0.1:{port}",
                "--threads=8", "origins:app"]

    proc, (port,) = serve(name, 1, command, quiet=True, cwd=HERE, env=env,
                          stdout=subprocess.DEVNULL)
    return proc, port


def start_proxy(binary, origin_port, workdir):
    workdir.mkdir(parents=True, exist_ok=True)

    def command(ports):
        http, admin = ports
        (workdir / "proxy.toml").write_text(
            f'[listen]\nhttp = "127.0.0.1:{http}"\nadmin = "127.0.0.1:{admin}"\n'
            '[timeouts]\nheader_read = "2s"\nbody_read = "2s"\nper_try = "3s"\n')
        (workdir / "upstreams.toml").write_text(
            f'[pool.origin]\nendpoints = [{{ addr = "127.0.0.1:{origin_port}" }}]\n'
            '[pool.origin.health]\ninterval = "60s"\n')
        return [str(binary), "--config", str(workdir / "proxy.toml")]

    proc, (http, _) = serve("proxy", 2, command, env=dict(os.environ, RUST_LOG="error"),
                            stdout=subprocess.DEVNULL)
    return proc, http


def exchange(port, raw):
    """Sends `raw`, half-closes, and reads until the proxy closes (or 5 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return data


RESET = 0
"""The status recorded for an HTTP/2 stream or connection the proxy refused with a reset."""


def exchange_h2(port, request):
    """Sends one HTTP/2 request (prior knowledge) built by the `h2` package with its checks
    off, so the frames carry exactly the case's fields, and returns the statuses answered
    (`RESET` for a stream or connection reset before any)."""
    import h2.config
    import h2.connection
    import h2.events

    config = h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False,
        split_outbound_cookies=False)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, list(request.fields),
                      end_stream=not request.data and request.trailers is None)
    for i, chunk in enumerate(request.data):
        conn.send_data(stream, chunk,
                       end_stream=i == len(request.data) - 1 and request.trailers is None)
    if request.trailers is not None:
        conn.send_headers(stream, list(request.trailers), end_stream=True)
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(conn.data_to_send())
        done = False
        try:
            while not done and (data := s.recv(65536)):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        out.append(int(dict(event.headers)[b":status"]))
                    elif isinstance(event, h2.events.StreamEnded):
                        done = True
                    elif isinstance(event, (h2.events.StreamReset,
                                            h2.events.ConnectionTerminated)):
                        if not out:
                            out.append(RESET)
                        done = True
                s.sendall(conn.data_to_send())
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
    return out


def records(log):
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if r["target"] != "/healthz":
            out.append(r)
    return out


def parsed(rs):
    """What an origin parsed, in a comparable form."""
    return [(r["method"], r["target"], r["host"], base64.b64decode(r["body"]), r["via"])
            for r in rs]


def judge(case, seen, answers):
    """(passed, verdict, note) for one case from each origin's requests and the answers."""
    smuggled = any("microcourses" not in (r[4] or "") for rs in seen.values() for r in rs)
    answered = {o: a if case.h2 else statuses(a) for o, a in answers.items()}
    rejected = all(not rs for rs in seen.values()) and all(
        st and all(s == RESET or s >= 400 for s in st) for st in answered.values())
    views = list(seen.values())
    agree = all(v == views[0] for v in views)
    forwarded = bool(views[0]) and agree
    if smuggled:
        return False, "SMUGGLED", "an origin parsed a hidden request"
    if not (rejected or agree):
        return False, "DISAGREE", "the origins parsed different requests"
    verdict = "rejected" if rejected else ("forwarded" if forwarded else "nothing")
    if case.expect == "reject" and not rejected:
        return False, verdict, "expected the proxy to refuse it"
    if case.expect == "forward" and not forwarded:
        return False, verdict, "expected it to reach the origins"
    if verdict == "nothing":
        return False, verdict, "no origin request and no refusal"
    return True, verdict, ""


def describe(rs):
    if not rs:
        return "-"
    return "; ".join(f"{m} {t} ({len(b)} B)" for (m, t, _, b, _) in rs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True, type=Path)
    ap.add_argument("--venv", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    only = {i for i in args.only.split(",") if i}
    cases = [c for c in corpus.CASES if not only or c.id in only]

    work = Path(tempfile.mkdtemp(prefix="smuggling-"))
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        proxies = {}
        for name in ORIGINS:
            log = work / f"{name}.jsonl"
            origin, port = start_origin(name, log, args.venv.resolve())
            procs.append(origin)
            proc, http = start_proxy(args.proxy.resolve(), port, work / f"proxy-{name}")
            procs.append(proc)
            proxies[name] = (http, log)

        results = []
        for case in cases:
            seen, answers = {}, {}
            for name, (http, log) in proxies.items():
                before = len(records(log))
                answers[name] = (exchange_h2(http, case.h2) if case.h2
                                 else exchange(http, case.raw))
                # The origin writes its record before it answers; a request the proxy gave up
                # on may still be landing: give it a moment to.
                time.sleep(0.02)
                seen[name] = parsed(records(log)[before:])
            ok, verdict, note = judge(case, seen, answers)
            codes = sorted({s for a in answers.values()
                            for s in (a if case.h2 else statuses(a))})
            results.append({
                "id": case.id, "class": case.cls, "doc": case.doc, "expect": case.expect,
                "passed": ok, "verdict": verdict, "note": note, "statuses": codes,
                "origins": {o: describe(rs) for o, rs in seen.items()},
            })
            if not ok:
                print(f"FAIL {case.id} [{case.cls}] {verdict}: {note}", file=sys.stderr)
                for o in ORIGINS:
                    print(f"     {o}: {describe(seen[o])} | {answers[o][:200]!r}",
                          file=sys.stderr)
    finally:
        stop_all(procs)

    write_report(out, results)
    passed = sum(r["passed"] for r in results)
    failed = len(results) - passed
    print(f"results: {out / 'results.md'}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def write_report(out, results):
    (out / "results.json").write_text(json.dumps(results, indent=1))
    classes = {}
    for r in results:
        c = classes.setdefault(r["class"], {"cases": 0, "rejected": 0, "forwarded": 0, "failed": 0})
        c["cases"] += 1
        c["failed"] += not r["passed"]
        if r["verdict"] == "rejected":
            c["rejected"] += 1
        elif r["verdict"] == "forwarded":
            c["forwarded"] += 1
    lines = ["# Differential smuggling suite", "",
             f"{len(results)} cases; origins: {', '.join(ORIGINS)}.", "",
             "| class | cases | refused by the proxy | forwarded, all origins agree | failed |",
             "|---|---|---|---|---|"]
    for name, c in classes.items():
        lines.append(f"| {name} | {c['cases']} | {c['rejected']} | {c['forwarded']} | {c['failed']} |")
    lines += ["", "| case | class | proxy | statuses | stdlib | gunicorn | waitress | pass |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        o = r["origins"]
        lines.append(f"| {r['id']} | {r['class']} | {r['verdict']} | "
                     f"{' '.join(map(str, r['statuses']))} | {o['stdlib']} | {o['gunicorn']} | "
                     f"{o['waitress']} | {'yes' if r['passed'] else 'NO: ' + r['note']} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
