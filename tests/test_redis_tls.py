"""TLS to Redis: a rediss:// url with the graph's CA and client certificate files, against
a real redis-server listening with TLS only; certificates made here with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis
from conftest import wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from graphrun import connect_redis, load_graph, redis_url
from graphrun.graph import Graph
from graphrun.redis_server import find_redis_server, free_port
from graphrun.runner import AgentRunner

GRAPH = """\
name: tls
redis:
  main:
    url: "rediss://127.0.0.1:PORT/0"
    tls: {ca: certs/ca.pem, cert: certs/client.pem, key: certs/client.key}
agents:
  counter:
    type: examples.counter
    params: {rate: 50}
  doubler:
    type: examples.doubler
    inputs: {numbers: counter.numbers}
"""


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
                 *, ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(_name(issuer[0] if issuer else subject)).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def write_pki(folder: Path, ca_name: str = "graphrun test CA") -> None:
    """A CA, and a server and a client certificate it signed, as PEM files."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(ca_name, ca_key, None, ca=True)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(who, key, (ca_name, ca_key))
        (folder / f"{who}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{who}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server that speaks TLS only (no plain TCP port) and asks clients for a certificate."""
    certs = tmp_path / "certs"
    write_pki(certs)
    port = free_port()
    process = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file", str(certs / "server.key"),
         "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "yes",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port, tmp_path
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def graph(tls_redis: tuple[int, Path]) -> Graph:
    port, folder = tls_redis
    path = folder / "tls.yaml"
    path.write_text(GRAPH.replace("PORT", str(port)))
    return load_graph(path)


def answers(client: redis.Redis) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
    return check


def test_the_graph_s_certificate_files_make_a_tls_connection_that_runs_agents(graph: Graph) -> None:
    url = redis_url(graph, "main")
    assert url.startswith("rediss://") and "ssl_ca_certs=" in url and "ssl_certfile=" in url
    client = connect_redis(url)
    wait_until(answers(client), what="the TLS redis-server")
    runners = [AgentRunner(graph, name, replica=0) for name in ("counter", "doubler")]
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: client.xlen("tls.doubler.doubled") >= 10, what="doubled numbers over TLS")
    finally:
        for runner in runners:
            runner.request_stop()
        for thread in threads:
            thread.join(15)
    assert b"ssl" in str(client.connection_pool.connection_class).encode().lower()


def test_a_plain_connection_to_the_tls_port_is_refused(graph: Graph, tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    wait_until(answers(connect_redis(redis_url(graph, "main"))), what="the TLS redis-server")
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping()


def test_a_server_certificate_from_another_ca_is_refused(graph: Graph, tls_redis: tuple[int, Path]) -> None:
    port, folder = tls_redis
    wait_until(answers(connect_redis(redis_url(graph, "main"))), what="the TLS redis-server")
    write_pki(folder / "other", ca_name="someone else's CA")
    certs = folder / "certs"
    url = f"rediss://127.0.0.1:{port}/0?" + urlencode({"ssl_ca_certs": folder / "other" / "ca.pem",
                                                       "ssl_certfile": certs / "client.pem",
                                                       "ssl_keyfile": certs / "client.key"})
    with pytest.raises(redis.ConnectionError, match="(?i)certificate"):
        connect_redis(url).ping()


def test_a_client_without_a_certificate_is_refused_by_a_server_that_asks_for_one(
        graph: Graph, tls_redis: tuple[int, Path]) -> None:
    port, folder = tls_redis
    wait_until(answers(connect_redis(redis_url(graph, "main"))), what="the TLS redis-server")
    bare = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={folder / 'certs' / 'ca.pem'}"
    with pytest.raises(redis.ConnectionError):
        connect_redis(bare).ping()


def test_tls_on_a_plain_url_is_refused_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH.replace("rediss://127.0.0.1:PORT/0", "redis://127.0.0.1:6379/0"))
    with pytest.raises(Exception, match=r"g.yaml:5:\d+: tls is for a rediss:// url.*\(redis.main.tls\)"):
        load_graph(path)
