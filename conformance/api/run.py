"""The API against its own OpenAPI document, with schemathesis (a property-based API fuzzer
nobody here wrote): one course-service instance on SecantusDB, on free loopback ports, with
an admin token so the writes are exercised too. Passes when schemathesis finds no server
error and every response conforms to the document (status code, content type, headers,
body schema)."""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import serve, stop_all  # noqa: E402

TOKEN = "schemathesis-admin-token-0123456789"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def wait_ready(url, proc, deadline=60.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"course-service exited (status {proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=1) as res:
                if res.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} was not ready within {deadline} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--service", required=True, help="the course-service binary")
    ap.add_argument("--venv", required=True, help="the venv with secantusd-py and schemathesis")
    ap.add_argument("--out", required=True, help="where the reports go")
    ap.add_argument("--examples", type=int, default=40, help="test cases per operation")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    procs = []
    work = None
    try:
        mongo, (mongo_port,) = serve("SecantusDB", 1, lambda ports: [
            os.path.join(args.venv, "bin", "secantusd-py"), "--host", "127.0.0.1",
            "--port", str(ports[0]), "--log-level", "WARNING", "--storage-path", ":memory:"])
        procs.append(mongo)
        work = tempfile.mkdtemp(prefix="mc-api-")
        config = os.path.join(work, "course-service.toml")

        def command(ports):
            with open(config, "w") as f:
                f.write(f'listen = "127.0.0.1:{ports[0]}"\n[mongodb]\n'
                        f'uri = "mongodb://127.0.0.1:{mongo_port}/?directConnection=true"\n'
                        'database = "schemathesis"\n')
            return [args.service, "serve", "--config", config]

        env = dict(os.environ, MC_ADMIN_TOKEN=TOKEN, RUST_LOG="warn")
        service, (port,) = serve("course-service", 1, command, deadline=60.0, env=env)
        procs.append(service)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base + "/readyz", service)

        command = [
            os.path.join(args.venv, "bin", "schemathesis"), "run", base + "/api/openapi.json",
            "--url", base,
            "--header", f"Authorization: Bearer {TOKEN}",
            "--checks", CHECKS,
            "--max-examples", str(args.examples),
            "--seed", "20261130",
            "--generation-allow-x00", "true",
            "--report", "junit",
            "--report-dir", args.out,
            "--no-color",
        ]
        print("+", " ".join(command), flush=True)
        # Its cache of examples goes with the reports, not into the checkout.
        result = subprocess.run(command, timeout=900, cwd=args.out)
        if service.poll() is not None:
            raise SystemExit(f"course-service died during the run (status {service.returncode})")
        if result.returncode != 0:
            raise SystemExit(f"schemathesis found problems (exit {result.returncode}); "
                             f"reports in {args.out}")
        print("api: schemathesis found no server error and no response off the document")
    finally:
        stop_all(procs)
        if work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
