#!/usr/bin/python3
"""deploy/k8s/ against the daemons it deploys: every flag file in the ConfigMap starts the
real daemon (paths and addresses pointed at this machine), container ports, probes and
Services agree with the flags' listen addresses, the edge's --cloud names the cloud's
headless Service, and termination grace covers the drain.

    /usr/bin/python3 tests/deploy/k8s_manifests_test.py build/bin
"""

import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

BIN = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
DAEMON_OF = {"cloud.flags": "kvstream-cloud", "edge.flags": "kvstream-edge"}


def load_manifests():
    docs = []
    for path in sorted(glob.glob("deploy/k8s/*.yaml")):
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def flags_of(text):
    """{name: value} of a flag file; duplicates are an error (absl keeps the last)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"--([a-z_0-9]+)=(.*)", line)
        assert m, f"not a --flag=value line: {line!r}"
        assert m.group(1) not in out, f"--{m.group(1)} given twice: absl would keep only the last"
        out[m.group(1)] = m.group(2)
    return out


def port_of(address):
    return int(address.rsplit(":", 1)[1])


class K8sManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = load_manifests()
        cls.by_kind = {}
        for d in cls.docs:
            cls.by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        cls.flagfiles = cls.by_kind["ConfigMap"]["kvstream-flags"]["data"]

    def deployment_container(self, name):
        spec = self.by_kind["Deployment"][name]["spec"]["template"]["spec"]
        return spec, spec["containers"][0]

    def test_every_flag_file_starts_its_daemon(self):
        work = tempfile.mkdtemp(prefix="kvstream-k8s-")
        procs = []
        try:
            cloud_port = None
            for key in ["cloud.flags", "edge.flags"]:
                text = self.flagfiles[key].replace("/models/", "testdata/models-2k/")
                text = re.sub(r"--listen=\S+", "--listen=127.0.0.1:0", text)
                text = re.sub(r"--metrics_address=\S+", "--metrics_address=127.0.0.1:0", text)
                if cloud_port is not None:
                    text = re.sub(r"--cloud=\S+", f"--cloud=127.0.0.1:{cloud_port}", text)
                flagfile = f"{work}/{key}"
                with open(flagfile, "w") as f:
                    f.write(text)
                port_file = f"{work}/{key}.port"
                log = open(f"{work}/{key}.log", "w")
                quick = ["--measure_rates=false"] if key == "cloud.flags" else []
                procs.append((subprocess.Popen(
                    [f"{BIN}/{DAEMON_OF[key]}", f"--flagfile={flagfile}",
                     f"--port_file={port_file}"] + quick,
                    stdout=log, stderr=subprocess.STDOUT), log))
                port = self.wait_for_port(port_file, procs[-1][0], f"{work}/{key}.log")
                if key == "cloud.flags":
                    cloud_port = port
        finally:
            for p, log in reversed(procs):
                p.send_signal(signal.SIGTERM)
                self.assertEqual(p.wait(timeout=30), 0)
                log.close()

    def wait_for_port(self, port_file, proc, log):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.assertIsNone(proc.poll(), f"the daemon exited {proc.returncode}; see {log}")
            if os.path.exists(port_file):
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    return int(text)
            time.sleep(0.05)
        self.fail(f"no port in 60 s; see {log}")

    def test_ports_probes_and_services_agree_with_the_flags(self):
        for name, key in [("kvstream-cloud", "cloud.flags"), ("kvstream-edge", "edge.flags")]:
            flags = flags_of(self.flagfiles[key])
            pod, c = self.deployment_container(name)
            self.assertEqual(c["command"][0], DAEMON_OF[key])
            self.assertIn(f"--flagfile=/etc/kvstream/{key}", c["command"])
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            self.assertEqual(ports["grpc"], port_of(flags["listen"]), name)
            self.assertEqual(ports["metrics"], port_of(flags["metrics_address"]), name)
            meta = self.by_kind["Deployment"][name]["spec"]["template"]["metadata"]
            self.assertEqual(int(meta["annotations"]["prometheus.io/port"]), ports["metrics"])
            for probe in ["readinessProbe", "livenessProbe"]:
                self.assertEqual(c[probe]["grpc"]["port"], ports["grpc"], f"{name} {probe}")
            service = {"kvstream-cloud": "kvstream.v1.CloudService",
                       "kvstream-edge": "kvstream.v1.EdgeService"}[name]
            self.assertEqual(c["readinessProbe"]["grpc"]["service"], service)
            svc = self.by_kind["Service"][name]
            self.assertEqual(svc["spec"]["selector"], {"app": name})
            for p in svc["spec"]["ports"]:
                self.assertIn(p["targetPort"], ports, f"{name} Service port {p['name']}")
            # SIGTERM drains for --shutdown_grace_seconds after the preStop pause.
            pause = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
            self.assertGreaterEqual(pod["terminationGracePeriodSeconds"],
                                    pause + float(flags["shutdown_grace_seconds"]), name)
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            self.assertEqual(mounts["flags"], "/etc/kvstream")
            for value in flags.values():
                for path in re.findall(r"(/models/[^,\s]*)", value):
                    self.assertTrue(path.startswith(mounts["models"] + "/"), path)

    def test_the_edge_balances_over_the_cloud_service(self):
        flags = flags_of(self.flagfiles["edge.flags"])
        cloud = self.by_kind["Service"]["kvstream-cloud"]
        self.assertEqual(cloud["spec"]["clusterIP"], "None", "headless: DNS lists every replica")
        ns = cloud["metadata"]["namespace"]
        port = next(p["port"] for p in cloud["spec"]["ports"] if p["name"] == "grpc")
        self.assertEqual(flags["cloud"], f"dns:///kvstream-cloud.{ns}.svc.cluster.local:{port}")
        self.assertEqual(flags.get("cloud_lb", "round_robin"), "round_robin")
        pdb = self.by_kind["PodDisruptionBudget"]["kvstream-cloud"]
        replicas = self.by_kind["Deployment"]["kvstream-cloud"]["spec"]["replicas"]
        self.assertLess(pdb["spec"]["minAvailable"], replicas)
        gpu = self.deployment_container("kvstream-cloud")[1]["resources"]["limits"]
        self.assertEqual(gpu["nvidia.com/gpu"], 1)
        for d in self.docs:
            if d["kind"] != "Namespace":
                self.assertEqual(d["metadata"]["namespace"], ns, d["metadata"]["name"])


if __name__ == "__main__":
    unittest.main()
