#!/usr/bin/python3
"""The Python client (clients/python) against real daemons: a kv and a text answer over
TLS with a bearer token, tokens streamed to the callback in order before ask() returns,
the same answer text as the C++ `kvstream ask`, and errors as KvstreamError with the
daemon's status code and message.

    PYTHONPATH=build/python /usr/bin/python3 tests/e2e/python_client_test.py build/bin
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

from kvstream_client import Client, KvstreamError, Policy

BIN = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
SCOUT, LARGE = "testdata/models-2k/scout", "testdata/models-2k/large"
CONTEXT = " ".join(f"The code of item{i} is w{7 * i}." for i in range(12))
QUESTION = "What is the code of item5?"
TOKEN = "py-client-secret"


def wait_for_file(path, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear in {seconds} s")


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="kvstream-pyclient-")
        w = cls.work
        subprocess.run(
            f"cd {w} && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem "
            "-days 2 -subj '/CN=kvstream test CA' 2>/dev/null && openssl req -newkey rsa:2048 "
            "-nodes -keyout server.key -out server.csr -subj '/CN=localhost' 2>/dev/null && "
            "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > ext.cnf && openssl x509 -req "
            "-in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
            "-extfile ext.cnf 2>/dev/null",
            shell=True, check=True)
        sha = subprocess.run(["sha256sum"], input=TOKEN.encode(), capture_output=True,
                             check=True).stdout.split()[0].decode()
        with open(f"{w}/tokens", "w") as f:
            f.write(f"apps {sha}\n")
        with open(f"{w}/token", "w") as f:
            f.write(TOKEN + "\n")
        cls.procs, cls.logs = [], []
        cloud_port = cls.start("cloud", [f"{BIN}/kvstream-cloud", f"--model=scout={SCOUT}",
                                         f"--model=large={LARGE}", "--measure_rates=false"])
        cls.edge_port = cls.start("edge", [
            f"{BIN}/kvstream-edge", f"--scout={SCOUT}", f"--cloud=127.0.0.1:{cloud_port}",
            "--cloud_model=large", f"--tls_cert={w}/server.pem", f"--tls_key={w}/server.key",
            f"--auth_tokens_file={w}/tokens"])
        cls.client = Client(f"127.0.0.1:{cls.edge_port}", token=TOKEN, tls_ca=f"{w}/ca.pem")

    @classmethod
    def start(cls, name, args):
        port_file = f"{cls.work}/{name}.port"
        log = open(f"{cls.work}/{name}.log", "w")
        cls.logs.append(log)
        p = subprocess.Popen(args + ["--listen=127.0.0.1:0", f"--port_file={port_file}",
                                     "--metrics_address=127.0.0.1:0",
                                     "--shutdown_grace_seconds=5"],
                             stdout=log, stderr=subprocess.STDOUT)
        cls.procs.append(p)
        return wait_for_file(port_file, 60)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        for p in reversed(cls.procs):
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=20) == 0, f"{p.args[0]} exited {p.returncode}"
        for log in cls.logs:
            log.close()

    def test_kv_answer_streams_tokens_and_returns_stats(self):
        seen = []
        r = self.client.ask(QUESTION, context=CONTEXT, on_token=seen.append,
                            policy=Policy(mode="kv", spec="int8", max_tokens=6))
        self.assertGreater(len(r.token_ids), 0)
        self.assertEqual(len(seen), len(r.token_ids), "one callback per token")
        self.assertEqual("".join(seen), r.text)
        self.assertEqual(r.stats.mode, 1)  # MODE_KV
        self.assertEqual(r.stats.spec, "int8")
        self.assertGreater(r.stats.wire_bytes, 0)
        self.assertGreater(r.stats.compression_ratio, 1)
        self.assertGreater(r.ttft_seconds, 0)
        self.assertEqual(r.stats.tokens_generated, len(r.token_ids))

    def test_same_answer_as_the_cpp_client(self):
        r = self.client.ask(QUESTION, context=CONTEXT, policy=Policy(mode="text", max_tokens=6))
        with open(f"{self.work}/context", "w") as f:
            f.write(CONTEXT)
        out = subprocess.run(
            [f"{BIN}/kvstream", "ask", f"--edge=127.0.0.1:{self.edge_port}",
             f"--context={self.work}/context", f"--question={QUESTION}", "--mode=text",
             "--max_tokens=6", f"--tls_ca={self.work}/ca.pem",
             f"--token_file={self.work}/token"],
            capture_output=True, text=True, check=True).stdout
        self.assertTrue(r.text.strip())
        self.assertIn(r.text.strip(), out)

    def test_errors_carry_the_status_and_the_message(self):
        anonymous = Client(f"127.0.0.1:{self.edge_port}", tls_ca=f"{self.work}/ca.pem")
        with self.assertRaises(KvstreamError) as e:
            anonymous.ask(QUESTION, context=CONTEXT)
        self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        anonymous.close()
        with self.assertRaises(KvstreamError) as e:
            self.client.ask(QUESTION, context=CONTEXT, policy=Policy(mode="kv", spec="int99"))
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("int99", e.exception.message)
        with self.assertRaises(ValueError):
            Policy(mode="fast").to_proto()


if __name__ == "__main__":
    unittest.main()
