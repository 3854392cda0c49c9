"""Secure channels and user names: the opcua agent (client mode) against a real asyncua
server that offers only Basic256Sha256 or Aes128_Sha256_RsaOaep with SignAndEncrypt and
takes only one user, with certificates from files and the password from a secret."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID
from graphrun.testing import AgentHarness
from graphrun_agents.modbus.simulator import free_port
from graphrun_agents.opcua.agent import OpcuaAgent
from graphrun_agents.opcua.params import OpcuaParams, Security
from graphrun_agents.opcua.simulator import OpcuaPlcSim

NODES = {"sequence": "ns=2;s=Result.Sequence", "part_id": "ns=2;s=Result.PartId"}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and key for each side, as files."""
    folder = tmp_path_factory.mktemp("pki")
    files: dict[str, Path] = {}
    for side, use in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        files[f"{side}_key"], files[f"{side}_cert"] = folder / f"{side}.pem", folder / f"{side}.der"
        asyncio.run(setup_self_signed_certificate(
            files[f"{side}_key"], files[f"{side}_cert"], f"urn:graphrun:test:{side}", socket.gethostname(),
            [use], {"countryName": "DE", "organizationName": "graphrun", "commonName": f"graphrun test {side}"}))
    return files


def verdict(part_id: int) -> dict:
    return {"part_id": part_id, "camera": "front", "defective": False, "label": "ok", "score": 0.1,
            "threshold": 0.5, "model": "m", "model_version": "1", "backend": "onnxruntime",
            "preprocess_ms": 1.0, "inference_ms": 1.0}


@pytest.fixture(params=["Basic256Sha256", "Aes128_Sha256_RsaOaep"])
def secured(request: pytest.FixtureRequest, certificates: dict[str, Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A PLC simulator offering one policy with SignAndEncrypt and one user; the agent's params."""
    url = f"opc.tcp://127.0.0.1:{free_port()}/plc/"
    policy = request.param
    client_security = {"policy": policy, "mode": "SignAndEncrypt", "certificate": str(certificates["client_cert"]),
                       "private_key": str(certificates["client_key"]),
                       "server_certificate": str(certificates["server_cert"])}
    params = {"url": url, "nodes": NODES, "security": client_security, "secret": "plc1", "timeout": 2.0}
    server_security = Security(policy=policy, mode="SignAndEncrypt", certificate=certificates["server_cert"],
                               private_key=certificates["server_key"])
    sim = OpcuaPlcSim(OpcuaParams.model_validate(params), security=server_security, user=("line", "s3cret"))
    sim.start()
    yield policy, params
    sim.stop()


def test_results_are_written_over_an_encrypted_channel_as_the_user_of_the_secrets(
    secured: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, params = secured
    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")
    monkeypatch.setenv("GRAPHRUN_PLC1_USER", "line")
    monkeypatch.setenv("GRAPHRUN_PLC1_PASSWORD_FILE", str(password_file))  # as Docker and Kubernetes mount it
    with AgentHarness(OpcuaAgent, params=params, groups={"verdicts": ["front"]}) as h:
        assert h.status["server"] == "connected"
        h.send("front", verdict(1))
        assert h.released and not h.held


def test_a_wrong_password_is_refused_and_no_verdict_is_acknowledged(
    secured: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, params = secured
    monkeypatch.setenv("GRAPHRUN_PLC1_USER", "line")
    monkeypatch.setenv("GRAPHRUN_PLC1_PASSWORD", "guess")
    with AgentHarness(OpcuaAgent, params=params, groups={"verdicts": ["front"]}) as h:
        assert h.status["server"].startswith("refused: Bad")  # BadUserAccessDenied or BadIdentityTokenRejected
        assert "s3cret" not in str(h.status) and "guess" not in str(h.status)
        message = h.send("front", verdict(1))
        h.tick()
        assert h.held == [message]


def test_a_server_offering_only_encryption_refuses_a_plain_session(
    secured: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, params = secured
    monkeypatch.setenv("GRAPHRUN_PLC1_USER", "line")
    monkeypatch.setenv("GRAPHRUN_PLC1_PASSWORD", "s3cret")
    plain = {**params, "security": None}
    with AgentHarness(OpcuaAgent, params=plain, groups={"verdicts": ["front"]}) as h:
        deadline = time.monotonic() + 5
        while h.status.get("server") == "connected" and time.monotonic() < deadline:
            h.tick()
        assert h.status["server"] != "connected"


def test_the_server_mode_offers_the_same_security(certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHRUN_OPCUA_USER", "scada")
    monkeypatch.setenv("GRAPHRUN_OPCUA_PASSWORD", "pw")
    url = f"opc.tcp://127.0.0.1:{free_port()}/line/"
    params = {"mode": "server", "url": url, "security": {
        "policy": "Basic256Sha256", "certificate": str(certificates["server_cert"]),
        "private_key": str(certificates["server_key"])}}

    async def read_as(password: str) -> Any:
        client = Client(url, timeout=5)
        client.application_uri = "urn:graphrun:test:client"
        client.set_user("scada")
        client.set_password(password)
        await client.set_security_string(
            f"Basic256Sha256,SignAndEncrypt,{certificates['client_cert']},{certificates['client_key']},"
            f"{certificates['server_cert']}")
        async with client:
            idx = await client.get_namespace_index("urn:graphrun:line")
            return await client.get_node(ua.NodeId("Line.Health.State", idx)).read_value()

    with AgentHarness(OpcuaAgent, params=params, groups={"verdicts": ["front"]}):
        assert asyncio.run(read_as("pw")) == "running"
        with pytest.raises(ua.UaStatusCodeError):
            asyncio.run(read_as("wrong"))
