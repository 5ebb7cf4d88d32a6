"""MQTT for the tests: a subscriber that collects retained and live messages, and a
private Mosquitto (Debian's ``mosquitto``) that a test may stop and start again on the
same port, with a password file."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho

from tests.tools import need, tool_missing
from tests.waiting import wait_until

SHARED_BROKER = ("127.0.0.1", 1883)


class Subscriber:
    """Every message under ``pattern``, newest per topic, as parsed text."""

    def __init__(
        self,
        host: str,
        port: int,
        pattern: str,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.messages: dict[str, str] = {}
        self.history: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(pattern, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise AssertionError(f"could not subscribe to {pattern} on {host}:{port}")

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self.lock:
            text = message.payload.decode()
            self.messages[message.topic] = text
            self.history.append((message.topic, text))

    def wait_for(self, topic: str, predicate=lambda text: True, what: str = "") -> str:
        def found() -> str | None:
            with self.lock:
                text = self.messages.get(topic)
            return text if text is not None and predicate(text) else None

        return wait_until(found, what=what or topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clear_retained(host: str, port: int, topics: list[str]) -> None:
    """Retained messages outlive the test on the shared broker: empty them."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.connect(host, port)
    client.loop_start()
    for topic in topics:
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


# Ports a private broker may take (this worktree's range on the shared machine).
PRIVATE_PORTS = range(18400, 18500)


def free_port() -> int:
    for port in PRIVATE_PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PRIVATE_PORTS}")


def _run_as() -> str | None:
    """As root, mosquitto drops to the user "mosquitto", which could not read our files:
    it stays the user we are."""
    import os
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name if os.getuid() == 0 else None


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run([need("openssl", "openssl"), *args], check=True, capture_output=True, timeout=30)


def make_ca(root: Path, name: str) -> tuple[Path, Path]:
    """A root CA as a private PKI has one: CA:TRUE (critical), keyCertSign and cRLSign."""
    cert, key = root / f"{name}.pem", root / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "30",
        "-subj", f"/O=P1 Platform tests/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    return cert, key


def broker_certificates(root: Path, host: str = "localhost") -> Certificates:
    """A server certificate for ``host`` (subjectAltName DNS only), signed by a CA of
    its own, shaped like a public one: CA:FALSE, digitalSignature, serverAuth, key ids."""
    ca, ca_key = make_ca(root, "P1 Test Root CA")
    key, request, cert = root / "broker.key", root / "broker.csr", root / "broker.pem"
    extensions = root / "broker.ext"
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=DNS:{host}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(request), "-subj", f"/CN={host}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    return Certificates(ca, cert, key)


class PrivateMosquitto:
    """A Mosquitto of the test's own, password required; with ``tls``, its listener
    speaks TLS only (the certificate and key given)."""

    def __init__(self, username: str, password: str, tls: Certificates | None = None) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if binary is None or shutil.which("mosquitto_passwd") is None:
            tool_missing("mosquitto (Debian package mosquitto) is not installed")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="p1-mosquitto-"))
        self.port = free_port()
        passwords = self.root / "passwords"
        subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwords), username, password],
            check=True,
            capture_output=True,
            timeout=10,
        )
        passwords.chmod(0o600)
        self.config = self.root / "mosquitto.conf"
        user = _run_as()
        listener = f"listener {self.port} 127.0.0.1\n"
        if tls is not None:
            listener += f"certfile {tls.cert}\nkeyfile {tls.key}\ntls_version tlsv1.2\n"
        self.config.write_text(
            f"{listener}allow_anonymous false\n"
            f"password_file {passwords}\npersistence false\n" + (f"user {user}\n" if user else "")
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, what=f"mosquitto on {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
