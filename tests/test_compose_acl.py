"""`graphrun compose` wires the graph's ACL users: the one-shot ACL service's command, run
here as a process with the secrets as local files, writes the file the Redis service's
command loads; the Redis health check logs in as the observer. No Docker engine: the
commands of the containers are run as processes against a real redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis
from conftest import wait_until
from test_compose import REPO, compose

from graphrun.redis_server import find_redis_server, free_port


def test_the_acl_service_writes_the_users_the_redis_service_loads_and_checks_its_health_with(tmp_path: Path) -> None:
    gen = compose(tmp_path, (REPO / "graphs" / "hello.yaml").read_text(), name="hello.yaml")
    doc = gen.docs["local"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in doc["secrets"]:
        (secrets / name).write_text(f"{name}-password\n")
    volume = tmp_path / "acl-volume"
    volume.mkdir()

    def local(text: str) -> str:
        return (text.replace("/run/secrets/", f"{secrets}/").replace("/graph/", f"{gen.out}/")
                .replace("/etc/redis/acl/", f"{volume}/"))

    maker = doc["services"]["acl-main"]
    assert maker["restart"] == "no" and set(maker["secrets"]) == set(doc["secrets"])  # every user of redis-main
    command = [local(a) for a in maker["command"]]
    command[command.index("--out") + 1] = str(volume)
    env = {**os.environ, **{k: local(v) for k, v in maker["environment"].items()}}
    subprocess.run([sys.executable, "-m", "graphrun", *command], env=env, check=True, capture_output=True)
    aclfile = (volume / "main.acl").read_text()
    assert "password" not in aclfile and aclfile.startswith("user default off")

    server = doc["services"]["redis-main"]
    assert "acl-main:/etc/redis/acl:ro" in server["volumes"]
    assert server["depends_on"] == {"acl-main": {"condition": "service_completed_successfully"}}
    port = free_port()
    process = subprocess.Popen([find_redis_server(), *[local(a) for a in server["command"][1:]], "--port", str(port),
                                "--bind", "127.0.0.1", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        anonymous = redis.Redis(port=port)

        def refuses_the_default_user() -> bool:
            try:
                anonymous.ping()
            except redis.AuthenticationError:
                return True
            except redis.ConnectionError:
                return False
            raise AssertionError("the default user may log in")

        wait_until(refuses_the_default_user, what="the container's redis-server")
        doubler = redis.Redis(port=port, username="hello-doubler", password="redis_password_doubler-password")
        assert doubler.ping()
        check = server["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        script = local(check[1]).replace("$$", "$").replace("redis-cli ", f"redis-cli -p {port} ")
        assert subprocess.run(["sh", "-c", script], capture_output=True, timeout=30).returncode == 0
        wrong = script.replace("redis_password_observer)", "redis_password_doubler)")
        assert subprocess.run(["sh", "-c", wrong], capture_output=True, timeout=30).returncode != 0
    finally:
        process.terminate()
        process.wait(10)


def test_every_agent_mounts_only_its_own_secret_and_every_secret_is_a_file_in_secrets(tmp_path: Path) -> None:
    gen = compose(tmp_path, (REPO / "graphs" / "finger_follower.yaml").read_text(), name="finger_follower.yaml")
    for node, doc in gen.docs.items():
        declared = doc["secrets"]
        assert all(spec == {"file": f"./secrets/{name}"} for name, spec in declared.items())
        for name, service in doc["services"].items():
            assert set(service.get("secrets", [])) <= set(declared), f"{node}/{name} mounts an undeclared secret"
            if service["command"][0] == "agent":
                agent = service["command"][2]
                # its own Redis password, and what its class declares it reads (the HMI: the operator token)
                assert service["secrets"][0] == f"redis_password_{agent}"
                assert set(service["secrets"][1:]) <= {"operator_token"}
                assert ("operator_token" in service["secrets"]) == (agent == "hmi")
                assert service["environment"]["GRAPHRUN_REDIS_USER"] == f"finger_follower-{agent}"
        assert "redis_password_" in gen.header(node)
    assert "password:" not in "".join(gen.text.values())
