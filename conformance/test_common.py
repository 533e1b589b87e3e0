"""Tests of what the runners share (run by scripts/conformance before the suites).

A port found free may be taken by another process before the server binds it; CI once lost
a whole run to that (testssl.sh's proxy: "Address already in use"). `serve` must start the
server again on new ports when that happens, and only then."""

import socket
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# A server that listens on the port it is given, after printing to stderr what Rust's
# standard library prints when the port is taken, if its port is held by someone else.
SERVER = """
import socket, sys, time
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError as e:
    sys.exit(f"cannot listen on 127.0.0.1:{sys.argv[1]}: {e}")
s.listen()
time.sleep(60)
"""


class Serve(unittest.TestCase):
    def test_a_port_taken_before_the_server_binds_it_means_new_ports(self):
        thief = socket.socket()
        attempts = []

        def command(ports):
            attempts.append(ports[0])
            if len(attempts) == 1:  # another socket takes the port in between
                thief.bind(("127.0.0.1", ports[0]))
            return [sys.executable, "-c", SERVER, str(ports[0])]

        try:
            proc, (port,) = common.serve("the server", 1, command, quiet=True)
            try:
                self.assertEqual(len(attempts), 2)
                self.assertNotEqual(port, attempts[0])
                self.assertTrue(common.listening(port))
            finally:
                common.stop_all([proc])
        finally:
            thief.close()

    def test_any_other_early_exit_ends_the_runner_at_once(self):
        attempts = []

        def command(ports):
            attempts.append(ports)
            return [sys.executable, "-c", "import sys; sys.exit('bad configuration')"]

        with self.assertRaises(SystemExit):
            common.serve("the server", 1, command, quiet=True)
        self.assertEqual(len(attempts), 1)

    def test_no_two_ports_of_one_runner_are_the_same(self):
        ports = [common.free_port() for _ in range(2000)]
        self.assertEqual(len(set(ports)), len(ports))


if __name__ == "__main__":
    unittest.main()
