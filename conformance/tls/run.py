"""testssl.sh against the proxy's TLS listener.

The proxy starts with an https listener and a generated development certificate; testssl.sh
(protocols, cipher categories, server defaults, every vulnerability check) scans it. Pass:
SSLv2, SSLv3, TLS 1.0 and 1.1 not offered; TLS 1.2 and 1.3 offered; no finding of severity
LOW or above except about the certificate itself (a self-signed development certificate is
untrusted and names no revocation service by design; production brings its own).

Usage: run.py --proxy target/debug/proxy [--out DIR]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import free_port, serve, stop_all  # noqa: E402

SEVERE = {"LOW", "MEDIUM", "HIGH", "CRITICAL"}
# Findings about the certificate, not the TLS stack: trust, validity, revocation, CAA.
ABOUT_THE_CERTIFICATE = ("cert_", "DNS_CAArecord")




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tls-"))
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    upstream = free_port()  # nothing listens there: testssl.sh never gets past TLS

    def command(ports):
        http, https, admin = ports
        (work / "proxy.toml").write_text(
            f'[listen]\nhttp = "127.0.0.1:{http}"\nhttps = "127.0.0.1:{https}"\n'
            f'admin = "127.0.0.1:{admin}"\n[tls]\nself_signed = true\n')
        (work / "upstreams.toml").write_text(
            f'[pool.main]\nendpoints = [{{ addr = "127.0.0.1:{upstream}" }}]\n')
        return [str(args.proxy.resolve()), "--config", str(work / "proxy.toml")]

    proxy, (_, https, _) = serve("the proxy", 3, command, ready=1,
                                 env=dict(os.environ, RUST_LOG="error"))
    try:
        report = out / "testssl.json"
        report.unlink(missing_ok=True)
        subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off",
                        "--jsonfile", str(report), "-p", "-s", "-f", "-U", "-S",
                        f"127.0.0.1:{https}"], stdout=subprocess.DEVNULL, timeout=600)
        findings = json.loads(report.read_text())
    finally:
        stop_all([proxy])

    by_id = {f["id"]: f for f in findings}
    checks = []
    for proto in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"]:
        f = by_id.get(proto, {})
        checks.append((f"{proto} not offered", "not offered" in f.get("finding", ""), f.get("finding")))
    for proto in ["TLS1_2", "TLS1_3"]:
        f = by_id.get(proto, {})
        checks.append((f"{proto} offered", f.get("finding", "").startswith("offered"), f.get("finding")))
    severe = [f for f in findings if f["severity"] in SEVERE
              and not f["id"].startswith(ABOUT_THE_CERTIFICATE)]
    checks.append(("no weak suite or vulnerability flagged", not severe,
                   "; ".join(f"{f['id']} {f['severity']}: {f['finding']}" for f in severe) or "none"))
    cert = [f"{f['id']} ({f['severity']})" for f in findings
            if f["severity"] in SEVERE and f["id"].startswith(ABOUT_THE_CERTIFICATE)]
    print(f"testssl.sh: {len(findings)} findings; about the development certificate only: "
          f"{', '.join(cert) or 'none'}")
    failed = 0
    for name, ok, detail in checks:
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    print(f"{len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
