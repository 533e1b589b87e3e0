"""What the conformance runners share: free loopback ports, waiting for a listener, and
stopping the processes a runner started (each in a session of its own)."""

import os
import random
import signal
import socket
import subprocess
import time


def free_port():
    """A port below the ephemeral range that nothing listens on now."""
    while True:
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


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
