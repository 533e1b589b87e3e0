"""What the conformance runners share: free loopback ports, starting a server on them (again
on new ones if another process took one meanwhile), waiting for a listener, and stopping the
processes a runner started (each in a session of its own)."""

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

_GIVEN = set()
# How a server says it lost a port: the Rust standard library and Python (EADDRINUSE),
# gunicorn ("Connection in use").
_PORT_TAKEN = re.compile(r"(?i)address already in use|connection in use|os error 98")


def free_port():
    """A port below the ephemeral range that nothing listens on now and that this process
    has not handed out before (two servers of one runner never share one)."""
    while True:
        port = random.randint(20000, 30000)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port


def serve(what, count, command, ready=0, quiet=False, attempts=5, deadline=20.0, **popen):
    """Starts `command(ports)` (its argv; it may also write the configuration that names
    them) on `count` fresh ports and waits until `ports[ready]` accepts. Returns the process
    and the ports.

    A port found free can be taken by another process before the server binds it. A server
    that exits saying so is started again on new ports; any other early exit ends the
    runner. The server's stderr is relayed to ours (unless `quiet`) as it is written."""
    for attempt in range(1, attempts + 1):
        ports = [free_port() for _ in range(count)]
        proc = subprocess.Popen(command(ports), stderr=subprocess.PIPE,
                                start_new_session=True, **popen)
        said = []
        relay = threading.Thread(target=_relay, args=(proc.stderr, said, quiet), daemon=True)
        relay.start()
        try:
            wait_listening(ports[ready], proc, what, deadline)
            return proc, ports
        except SystemExit:
            if proc.poll() is None:  # alive but not listening in time
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            relay.join(timeout=5)
            if attempt < attempts and any(_PORT_TAKEN.search(line) for line in said):
                print(f"{what}: one of ports {ports} was taken meanwhile; starting again on "
                      "new ones", file=sys.stderr)
                continue
            if quiet:
                sys.stderr.write("".join(said))
            raise
    raise AssertionError("unreachable")


def _relay(pipe, said, quiet):
    with pipe:
        for raw in pipe:
            line = raw.decode(errors="replace")
            if len(said) < 200:
                said.append(line)
            if not quiet:
                sys.stderr.write(line)
                sys.stderr.flush()


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_listening(port, proc, what, deadline=20.0):
    """Waits until `port` accepts; exits the runner if `proc` dies or time runs out."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited before listening on {port} (status {proc.returncode})")
        if listening(port):
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {deadline} s")


def stop_all(procs):
    """SIGTERM to every process group started, then SIGKILL to what is left after 10 s."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
