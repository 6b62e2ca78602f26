"""Ops test harness: a `switchboard serve` child process run the way systemd runs it (its own
environment, stderr logs to a file, signals), an HTTP GET for the ops port, self-signed
certificates and a stand-in for systemd's notify socket."""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from switchboard.core.auth import TokenAuthority
from tests.support.server import FAST, SECRET

BASE_ENV = {
    "SWITCHBOARD_AUTH_SECRET": SECRET,
    "SWITCHBOARD_METRICS_PORT": "0",
    "SWITCHBOARD_TIMERS_TICK": "0.05",
    "SWITCHBOARD_TIMERS_RETRANSMIT_AFTER": "1.0",
    "SWITCHBOARD_LIMITS_SENDS_PER_SECOND": "5000",
    "SWITCHBOARD_LIMITS_SEND_BURST": "5000",
    **{"SWITCHBOARD_" + k.upper().replace(".", "_"): str(v)
       for k, v in FAST.items() if k.startswith("limits.")},
    "SWITCHBOARD_LOG_LEVEL": "INFO",
}
INHERITED_SYSTEMD = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Node:
    """One worker process. `env` adds to BASE_ENV; logs (stderr) go to `log_path`."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int = 0) -> None:
        self.data_dir = data_dir
        self.port = port
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("SWITCHBOARD_") and k not in INHERITED_SYSTEMD}
        self.env.update(BASE_ENV)
        self.env.update(env or {})
        self.log_path = data_dir.parent / f"{data_dir.name}-node.log"
        self.proc: subprocess.Popen | None = None
        self.scheme = "ws"
        self.metrics_port = 0
        self.tokens = TokenAuthority(SECRET.encode())

    async def start(self) -> "Node":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "switchboard", "serve", "--data-dir", str(self.data_dir),
                 "--port", str(self.port)],
                stdout=subprocess.PIPE, stderr=log, env=self.env)
        try:  # a start that fails leaves no process behind
            listening = await self._line()
            match = re.search(rb"(wss?)://[\d.]+:(\d+)/", listening)
            assert match, f"server did not start: {listening!r}\n{self.log()}"
            self.scheme, self.port = match.group(1).decode(), int(match.group(2))
            metrics = await self._line()
            self.metrics_port = int(re.search(rb"http://[\d.]+:(\d+)/", metrics).group(1))
        except BaseException:
            self.stop()
            raise
        return self

    async def _line(self) -> bytes:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 90)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/v1/ws"

    @property
    def ops(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def token(self, user: str, device: str = "phone") -> str:
        return self.tokens.mint(user, device, 3600)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Teardown: whatever state the test left the process in."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc is not None:
            self.proc.stdout.close()


async def http_get(url: str, method: str = "GET") -> tuple[int, bytes]:
    """One request to the ops port; returns (status, body)."""
    match = re.match(r"http://([\d.]+):(\d+)(/.*)", url)
    host, port, path = match.group(1), int(match.group(2)), match.group(3)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def make_cert(directory: Path, name: str) -> tuple[Path, Path, bytes]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem, DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


class NotifySocket:
    """What systemd listens on for sd_notify: a unix datagram socket; keeps what arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        """Everything received so far, in order."""
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return list(self.messages)
            self.messages.append(data.decode())

    def states(self) -> list[str]:
        return [line for message in self.poll() for line in message.split("\n")]

    def close(self) -> None:
        self.sock.close()
