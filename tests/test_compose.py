"""`graphrun compose`: a Docker Compose file per node, generated from a graph file.

No Docker engine is needed: the files are checked for their structure, and the command
they give each container is run here, as a process, against a real redis-server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from conftest import read_messages, wait_until, write_messages
from deploy_helpers import fresh_and_committed, generate_into

from graphrun import __version__, acl, load_graph
from graphrun.cli import main
from graphrun.compose import MARKER
from graphrun.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
HEALTHY = {"condition": "service_healthy"}


def login(graph: str, agent: str) -> dict[str, str]:
    """What every agent container is given to log in to Redis as its own ACL user."""
    return {"GRAPHRUN_REDIS_USER": f"{graph}-{agent}",
            "GRAPHRUN_REDIS_PASSWORD_FILE": f"/run/secrets/redis_password_{agent}"}

LINE = """\
name: line
redis:
  cams: {}
  edge: {maxmemory: 1gb}
nodes:
  camera_node: {redis: cams, platform: linux/arm64, host: 10.0.0.5}
  infer: {redis: edge, platform: linux/amd64}
  hmi: {}
agents:
  cam_front:
    type: camera
    node: camera_node
    params: {source: genicam, cti: /opt/vendor/lib/producer.cti, device: "1"}
    outputs: {frames: {redis: cams, stream: cam.front.frames, maxlen: 50}}
  cam_usb:
    type: camera
    node: camera_node
    params: {source: opencv, path: 2}
  cls:
    type: classification
    node: infer
    replicas: 2
    params: {providers: [CUDAExecutionProvider, CPUExecutionProvider]}
    inputs: {frames: cam_front.frames}
  cls_cpu:
    type: classification
    node: infer
    inputs: {frames: cam_usb.frames}
  show:
    type: examples.printer
    node: hmi
    inputs: {values: cls.verdicts}
"""


class Generated:
    """The files one `graphrun compose` wrote: node -> parsed document, and their text."""

    def __init__(self, out: Path):
        self.out = out
        self.text = {p.name.split(".")[1]: p.read_text() for p in sorted(out.glob("docker-compose.*.yml"))}
        self.docs: dict[str, dict[str, Any]] = {node: yaml.safe_load(text) for node, text in self.text.items()}

    def service(self, node: str, name: str) -> dict[str, Any]:
        return self.docs[node]["services"][name]

    def header(self, node: str) -> str:
        return "".join(line for line in self.text[node].splitlines(keepends=True) if line.startswith("#"))


def compose(tmp_path: Path, text: str, *args: str, name: str = "graph.yaml") -> Generated:
    return Generated(generate_into("compose", tmp_path, text, *args, name=name))


def test_a_graph_without_nodes_runs_on_one_local_node_beside_its_redis(tmp_path: Path) -> None:
    gen = compose(tmp_path, (REPO / "graphs" / "hello.yaml").read_text(), name="hello.yaml")
    assert list(gen.docs) == ["local"]
    doc = gen.docs["local"]
    assert list(doc["services"]) == ["counter", "doubler-0", "doubler-1", "printer", "acl-main", "redis-main"]
    counter = doc["services"]["counter"]
    assert counter["image"] == f"graphrun:{__version__}"
    assert counter["command"] == ["agent", "/graph/hello.yaml", "counter", "--replica", "0"]
    assert counter["volumes"] == ["./hello.yaml:/graph/hello.yaml:ro"]
    assert counter["environment"] == {"GRAPHRUN_REDIS_MAIN": "redis://redis-main:6379/0", **login("hello", "counter")}
    assert counter["secrets"] == ["redis_password_counter"]
    assert counter["depends_on"] == {"redis-main": HEALTHY}
    assert (counter["restart"], counter["init"], counter["stop_grace_period"]) == ("unless-stopped", True, "20s")
    assert "network_mode" not in counter and "platform" not in counter
    # The graph the containers mount is written beside the compose file.
    assert (gen.out / "hello.yaml").read_text() == (REPO / "graphs" / "hello.yaml").read_text()


def test_a_hosted_redis_keeps_its_data_reports_its_health_and_publishes_its_port(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE)
    redis_edge = gen.service("infer", "redis-edge")
    assert redis_edge["image"] == "redis:7.2"
    assert redis_edge["command"] == ["redis-server", "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                                     "--maxmemory", "1gb", "--aclfile", "/etc/redis/acl/edge.acl"]
    assert redis_edge["volumes"] == ["redis-edge:/data", "acl-edge:/etc/redis/acl:ro"]
    assert gen.docs["infer"]["volumes"] == {"redis-edge": {}, "acl-edge": {}}
    assert redis_edge["healthcheck"]["test"] == [  # the default user is off: the check logs in as the observer
        "CMD-SHELL", 'REDISCLI_AUTH="$$(cat /run/secrets/redis_password_observer)" redis-cli --user line-observer '
                     "ping | grep -q PONG"]
    assert redis_edge["ports"] == ["6379:6379"]
    assert redis_edge["restart"] == "unless-stopped"


def test_replicas_are_separate_services_each_a_stable_consumer(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE)
    services = gen.docs["infer"]["services"]
    assert [s for s in services if s.startswith("cls")] == ["cls-0", "cls-1", "cls_cpu"]
    assert services["cls-0"]["command"] == ["agent", "/graph/graph.yaml", "cls", "--replica", "0"]
    assert services["cls-1"]["command"] == ["agent", "/graph/graph.yaml", "cls", "--replica", "1"]


def test_each_node_gets_its_own_file_with_only_its_agents_and_the_redis_it_hosts(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE)
    assert sorted(gen.docs) == ["camera_node", "hmi", "infer"]
    assert list(gen.docs["camera_node"]["services"]) == ["cam_front", "cam_usb", "acl-cams", "redis-cams"]
    assert list(gen.docs["hmi"]["services"]) == ["show"]
    assert "volumes" not in gen.docs["hmi"]
    assert sorted(doc["name"] for doc in gen.docs.values()) == ["line-camera_node", "line-hmi", "line-infer"]


def test_agents_reach_redis_on_other_nodes_at_the_hosting_node_s_address(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE)
    cls = gen.service("infer", "cls-0")
    assert cls["environment"]["GRAPHRUN_REDIS_CAMS"] == "redis://10.0.0.5:6379/0"  # host given in the graph
    assert cls["environment"]["GRAPHRUN_REDIS_EDGE"] == "redis://redis-edge:6379/0"  # its own node
    assert cls["depends_on"] == {"redis-edge": HEALTHY}  # Compose orders services of one file only
    show = gen.service("hmi", "show")
    # Node infer has no host: the file reads it from the machine, and refuses to start without it.
    assert show["environment"]["GRAPHRUN_REDIS_EDGE"] == (
        "redis://${GRAPHRUN_NODE_INFER_HOST:?set the address of node infer}:6379/0")
    assert "depends_on" not in show
    assert "GRAPHRUN_NODE_INFER_HOST" in gen.header("hmi")
    assert "GRAPHRUN_NODE_INFER_HOST" not in gen.header("infer")


def test_an_agent_gets_only_the_redis_instances_it_uses(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE)
    # The cameras write to their own node's instance and need no address of another node.
    assert gen.service("camera_node", "cam_usb")["environment"] == {"GRAPHRUN_REDIS_CAMS": "redis://redis-cams:6379/0",
                                                                    **login("line", "cam_usb")}


def test_a_genicam_camera_is_on_the_host_network_and_reaches_its_redis_on_loopback(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE)
    cam = gen.service("camera_node", "cam_front")
    assert cam["network_mode"] == "host"
    assert cam["environment"]["GRAPHRUN_REDIS_CAMS"] == "redis://127.0.0.1:6379/0"
    assert "GENICAM_GENTL64_PATH" in cam["environment"] and cam["environment"]["GENICAM_GENTL64_PATH"] is None
    assert "/opt/vendor/lib:/opt/vendor/lib:ro" in cam["volumes"]  # the vendor's GenTL producer
    assert cam["depends_on"] == {"redis-cams": HEALTHY}


def test_a_camera_on_a_local_video_device_gets_the_device(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE)
    usb = gen.service("camera_node", "cam_usb")
    assert usb["devices"] == ["/dev/video2:/dev/video2"]
    assert "network_mode" not in usb


def test_the_node_s_platform_applies_to_all_its_services(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE)
    assert {s["platform"] for s in gen.docs["camera_node"]["services"].values()} == {"linux/arm64"}
    assert {s["platform"] for s in gen.docs["infer"]["services"].values()} == {"linux/amd64"}
    assert "platform" not in gen.service("hmi", "show")


def test_only_a_classification_agent_with_a_cuda_provider_reserves_the_gpu(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE)
    devices = gen.service("infer", "cls-1")["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "deploy" not in gen.service("infer", "cls_cpu")


def test_an_instance_that_runs_redisai_gets_the_redisai_image(tmp_path: Path) -> None:
    gen = compose(tmp_path, """\
name: ai
redis: {main: {}, inference: {}}
nodes:
  box: {redis: main}
  gpu: {redis: inference, host: gpu.plant}
agents:
  src: {type: examples.counter, node: box}
  cls:
    type: classification
    node: box
    params: {backend: redisai, redisai: inference, device: GPU}
    inputs: {frames: "main:frames"}
""")
    ai = gen.service("gpu", "redis-inference")
    assert ai["image"] == "redislabs/redisai:1.2.7-gpu-bionic"
    # The module is loaded as the image's own command does, beside the graph's persistence (aof).
    assert ai["command"] == ["redis-server", "--loadmodule", "/usr/lib/redis/modules/redisai.so",
                             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                             "--aclfile", "/etc/redis/acl/inference.acl"]
    assert "deploy" in ai
    # The agent opens the RedisAI instance itself (named in its params), on the other node.
    assert gen.service("box", "cls")["environment"]["GRAPHRUN_REDIS_INFERENCE"] == "redis://gpu.plant:6379/0"
    assert gen.service("box", "redis-main")["image"] == "redis:7.2"


def test_an_instance_with_a_url_is_read_from_the_mounted_graph_and_its_variables_pass_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANT_REDIS", "redis://:secret@db.plant:6379/0")
    gen = compose(tmp_path, """\
name: ext
redis:
  main: {url: "${PLANT_REDIS}"}
agents:
  src: {type: examples.counter, env: {OMP_NUM_THREADS: "${THREADS:-2}"}}
""")
    src = gen.service("local", "src")
    assert "GRAPHRUN_REDIS_MAIN" not in src["environment"]
    assert src["environment"]["PLANT_REDIS"] is None  # Compose takes it from the machine's environment
    assert src["environment"]["OMP_NUM_THREADS"] == "${THREADS:-2}"  # Compose expands it at `up`
    assert ":secret@" not in gen.text["local"]
    assert "redis-main" not in gen.docs["local"]["services"] and "depends_on" not in src
    assert "PLANT_REDIS" in gen.header("local")


def test_agents_with_network_addresses_see_the_network_as_they_would_without_containers(tmp_path: Path) -> None:
    gen = compose(tmp_path, """\
name: cell
redis: {main: {}}
agents:
  plc_sim:
    type: graphrun_agents.modbus.sim_agent:PlcSimAgent
    params: {host: 0.0.0.0, port: 5020}
  plc:
    type: modbus
    params: {host: 127.0.0.1, port: 5020}
    inputs: {front: "main:verdicts.front"}
  remote_plc:
    type: modbus
    params: {host: plc.line3}
    inputs: {front: "main:verdicts.front"}
""")
    # A server on every address has its port published.
    assert gen.service("local", "plc_sim")["ports"] == ["5020:5020"]
    assert "network_mode" not in gen.service("local", "plc_sim")
    # 127.0.0.1 means this machine: the agent shares the host's network, and so reaches its Redis on loopback.
    plc = gen.service("local", "plc")
    assert plc["network_mode"] == "host" and "ports" not in plc
    assert plc["environment"]["GRAPHRUN_REDIS_MAIN"] == "redis://127.0.0.1:6379/0"
    # A PLC elsewhere on the network is reached from the Compose network as it is.
    remote = gen.service("local", "remote_plc")
    assert "network_mode" not in remote and "ports" not in remote


def test_several_instances_on_one_node_publish_distinct_ports(tmp_path: Path) -> None:
    gen = compose(tmp_path, """\
name: two
redis: {main: {}, aux: {}}
agents:
  src: {type: examples.counter, outputs: {numbers: "aux:n"}}
""")
    services = gen.docs["local"]["services"]
    assert (services["redis-main"]["ports"], services["redis-aux"]["ports"]) == (["6379:6379"], ["6380:6379"])
    assert services["src"]["depends_on"] == {"redis-aux": HEALTHY}  # the only instance it uses


def test_an_instance_without_url_that_no_node_hosts_is_refused_with_the_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text("""\
name: orphan
redis: {main: {}}
nodes: {a: {}, b: {}}
agents:
  src: {type: examples.counter, node: a}
""")
    assert main(["compose", str(graph), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "'main'" in err and "add `redis: main` to the node" in err
    assert not (tmp_path / "out").exists()


def test_an_instance_several_nodes_name_runs_on_the_first_and_the_others_reach_it(tmp_path: Path) -> None:
    gen = compose(tmp_path, """\
name: shared
redis: {main: {}}
nodes: {box: {redis: main, host: box.plant}, hmi: {redis: main}}
agents:
  src: {type: examples.counter, node: box}
  show: {type: examples.printer, node: hmi, inputs: {values: src.numbers}}
""")
    assert "redis-main" in gen.docs["box"]["services"]
    assert list(gen.docs["hmi"]["services"]) == ["show"]
    assert gen.service("hmi", "show")["environment"] == {"GRAPHRUN_REDIS_MAIN": "redis://box.plant:6379/0",
                                                         **login("shared", "show")}


def test_the_image_and_a_single_node_can_be_chosen(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE, "--node", "hmi", "--image", "registry.plant/graphrun:1.2")
    assert list(gen.docs) == ["hmi"]
    assert gen.service("hmi", "show")["image"] == "registry.plant/graphrun:1.2"


def test_an_unknown_node_is_named_in_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(LINE)
    assert main(["compose", str(graph), "--node", "press", "--out", str(tmp_path / "out")]) == 1
    assert "no node 'press' (nodes: camera_node, infer, hmi)" in capsys.readouterr().err


def test_the_default_folder_is_deploy_slash_the_graph_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "line.yaml").write_text(LINE)
    monkeypatch.chdir(tmp_path)
    assert main(["compose", "line.yaml"]) == 0
    assert sorted(p.name for p in (tmp_path / "deploy" / "line").iterdir()) == [
        "docker-compose.camera_node.yml", "docker-compose.hmi.yml", "docker-compose.infer.yml", "line.yaml"]


def test_generation_is_deterministic_and_drops_files_of_nodes_gone_from_the_graph(tmp_path: Path) -> None:
    first = compose(tmp_path, LINE).text
    (tmp_path / "out" / "notes.yml").write_text("kept: true\n")  # not generated: left alone
    again = compose(tmp_path, LINE).text
    assert again == first
    fewer = LINE.replace("  hmi: {}\n", "").replace("    node: hmi\n", "    node: infer\n")
    gen = compose(tmp_path, fewer)
    assert list(gen.docs) == ["camera_node", "infer"]
    assert (tmp_path / "out" / "notes.yml").exists()


def test_every_file_follows_the_compose_specification(tmp_path: Path) -> None:
    """Checked against models generated from the Compose Specification's JSON schema, which
    refuse unknown keys and wrong types (there is no `docker compose` here to ask)."""
    try:
        from compose_pydantic.models import ComposeSpecification
    except ImportError:
        pytest.skip("compose-pydantic is not installed (pip install compose-pydantic)")
    with pytest.raises(ValueError):  # the check can fail
        ComposeSpecification.model_validate({"services": {"a": {"image": "x", "restart_policy": "always"}}})
    docs = [*compose(tmp_path / "line", LINE).docs.values(),
            *[yaml.safe_load(p.read_text()) for p in sorted((REPO / "deploy").glob("*/docker-compose.*.yml"))]]
    for doc in docs:
        ComposeSpecification.model_validate(doc)


def test_every_file_says_what_it_is_and_how_to_start_it(tmp_path: Path) -> None:
    gen = compose(tmp_path, LINE)
    for node, text in gen.text.items():
        assert MARKER in text.splitlines()[0]
        assert f"docker compose -f docker-compose.{node}.yml up -d" in gen.header(node)


def test_the_command_a_container_runs_starts_its_agent_and_stops_cleanly_on_sigterm(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """A service's command and environment, run here as a process (the compose network's
    redis-main replaced by a local server with the graph's ACL users, the secret mounted
    from a local file): it doubles a number under its own Redis user and the consumer name
    its replica number gives it, and exits 0 on the SIGTERM `docker stop` sends."""
    gen = compose(tmp_path, (REPO / "graphs" / "hello.yaml").read_text(), name="hello.yaml")
    service = gen.service("local", "doubler-1")
    command = [str(gen.out / Path(a).name) if a.startswith("/graph/") else a for a in service["command"]]
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "redis_password_doubler").write_text("doubler-password\n")
    env = {**os.environ, **{k: v.replace("redis://redis-main:6379/0", redis_server.url)
                            .replace("/run/secrets/", f"{tmp_path}/secrets/") for k, v in service["environment"].items()}}
    client = redis.Redis.from_url(redis_server.url)
    users = acl.users(load_graph(gen.out / "hello.yaml"))
    for setuser in acl.commands(users, "main", {"hello-doubler": "doubler-password"}):
        client.execute_command(*setuser)
    write_messages(client, "hello.numbers", [{"value": 21, "seq": 0}])
    process = subprocess.Popen([sys.executable, "-m", "graphrun", *command], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: client.xlen("hello.doubled") > 0, what="the doubled number")
        assert {c["user"] for c in client.client_list() if c["name"] == "doubler-1"} == {"hello-doubler"}
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert [m["value"] for m in read_messages(client, "hello.doubled")] == [42]
    assert {c["name"].decode() for c in client.xinfo_consumers("hello.numbers", "doubler")} == {"doubler-1"}


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in (REPO / "deploy").glob("*/docker-compose.*.yml")))
def test_the_committed_deploy_files_equal_a_fresh_generation(
        tmp_path: Path, folder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    committed = REPO / "deploy" / folder
    graphs = [p for p in committed.glob("*.yaml")]
    assert len(graphs) == 1, f"deploy/{folder} should hold one graph file"
    source = REPO / "graphs" / graphs[0].name
    assert source.exists(), f"deploy/{folder}/{graphs[0].name} has no source in graphs/"
    fresh, stale = fresh_and_committed("compose", source, committed, tmp_path / folder, monkeypatch)
    assert fresh == stale, f"deploy/{folder} is stale: run `graphrun compose graphs/{graphs[0].name}` (variables it reads unset)"


# --- agents of one's own say what their containers need: Agent.deployment ------------------

CELL_AGENTS = '''\
"""Agents of a plant's own, beside its graph, with what their containers need."""

from dataclasses import replace

from pydantic import BaseModel

from graphrun import Agent, Deployment, RedisModule


class ScannerParams(BaseModel):
    serial: str = "/dev/ttyUSB0"
    firmware: str = "/opt/scanner/firmware"


class Scanner(Agent):
    """A barcode scanner on a serial line, with a status page and a GPU decoder."""

    Params = ScannerParams

    @classmethod
    def deployment(cls, params: ScannerParams) -> Deployment:
        return Deployment(environment={"SCANNER_LICENSE": None, "SCANNER_MODE": "fast"},
                          volumes=(f"{params.firmware}:/firmware:ro",), devices=(params.serial,),
                          ports=(8081,), gpu=True, notes=(f"barcode scanner on {params.serial}",))

    def produce(self) -> None:
        self.wait(1)


class SearchParams(BaseModel):
    index: str
    module: str = "RediSearch"
    gpu: bool = False


class Search(Agent):
    """Looks parts up in an index kept by a Redis module on the instance it names."""

    Params = SearchParams

    @classmethod
    def deployment(cls, params: SearchParams) -> Deployment:
        image = "vendor/redis-" + params.module.lower() + (":gpu" if params.gpu else ":cpu")
        module = RedisModule(params.module, image, f"/opt/modules/{params.module.lower()}.so", gpu=params.gpu)
        return Deployment(redis_modules={params.index: module})

    def produce(self) -> None:
        self.wait(1)


class PanelParams(BaseModel):
    host: str = "127.0.0.1"
    port: int = 9600


class Panel(Agent):
    """An operator panel on a serial line that also talks to a server on this machine."""

    Params = PanelParams

    @classmethod
    def deployment(cls, params: PanelParams) -> Deployment:
        return replace(super().deployment(params), devices=("/dev/ttyS0",))

    def produce(self) -> None:
        self.wait(1)


class QuietPanel(Panel):
    """The same panel, reaching its server through a tunnel the container has of its own."""

    @classmethod
    def deployment(cls, params: PanelParams) -> Deployment:
        return Deployment()


class Licensed(Agent):
    """Reads its vendor's license key with graphrun.read_secret("scanner_license")."""

    @classmethod
    def deployment(cls, params: BaseModel) -> Deployment:
        return Deployment(secrets=("scanner_license",))

    def produce(self) -> None:
        self.wait(1)


class Broken(Agent):
    @classmethod
    def deployment(cls, params: BaseModel) -> Deployment:
        return {"network_mode": "host"}  # type: ignore[return-value]

    def produce(self) -> None:
        self.wait(1)
'''


def cell_graph(tmp_path: Path, agents: str, *, redis: str = "{main: {}}", nodes: str = "{}") -> str:
    """A graph of the agents in ``cell_agents.py``, written beside it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cell_agents.py").write_text(CELL_AGENTS)
    return f"name: cell\nredis: {redis}\nnodes: {nodes}\nagents:\n{agents}"


def compose_cell(tmp_path: Path, agents: str, **instances: str) -> Generated:
    return compose(tmp_path, cell_graph(tmp_path, agents, **instances))


def refused(tmp_path: Path, agents: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What `graphrun compose` says when it refuses a graph of the agents in ``cell_agents.py``."""
    graph = tmp_path / "graph.yaml"
    graph.write_text(cell_graph(tmp_path, agents))
    assert main(["compose", str(graph), "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()
    return capsys.readouterr().err


def test_a_custom_agent_s_deployment_hook_gives_its_service_what_it_asks_for(tmp_path: Path) -> None:
    gen = compose_cell(tmp_path, "  scanner: {type: 'cell_agents:Scanner', params: {serial: /dev/ttyACM1}}\n")
    scanner = gen.service("local", "scanner")
    assert scanner["environment"] == {"GRAPHRUN_REDIS_MAIN": "redis://redis-main:6379/0", **login("cell", "scanner"),
                                      "SCANNER_LICENSE": None, "SCANNER_MODE": "fast"}
    assert scanner["volumes"] == ["./graph.yaml:/graph/graph.yaml:ro", "/opt/scanner/firmware:/firmware:ro"]
    assert scanner["devices"] == ["/dev/ttyACM1:/dev/ttyACM1"]  # from the agent's params
    assert scanner["ports"] == ["8081:8081"]
    assert scanner["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "network_mode" not in scanner
    assert "# scanner: barcode scanner on /dev/ttyACM1\n" in gen.header("local")
    assert "# scanner: serves on port 8081\n" in gen.header("local")


def test_replicas_of_a_custom_agent_each_get_its_extras_but_cannot_share_a_host_port(tmp_path: Path) -> None:
    gen = compose_cell(tmp_path, "  scanner: {type: 'cell_agents:Scanner', replicas: 2}\n")
    for name in ("scanner-0", "scanner-1"):
        assert gen.service("local", name)["devices"] == ["/dev/ttyUSB0:/dev/ttyUSB0"]
        assert "ports" not in gen.service("local", name)
    assert "# scanner: 2 replicas cannot share host port 8081: not published\n" in gen.header("local")


def test_a_redis_module_an_agent_needs_chooses_the_image_of_the_instance_it_names(tmp_path: Path) -> None:
    gen = compose_cell(
        tmp_path,
        "  search: {type: 'cell_agents:Search', node: box, params: {index: parts}}\n"
        "  search_gpu: {type: 'cell_agents:Search', node: box, params: {index: parts, gpu: true}}\n",
        redis="{main: {}, parts: {}}", nodes="{box: {redis: main, platform: linux/arm64}, store: {redis: parts}}")
    parts = gen.service("store", "redis-parts")
    # A GPU build serves the agents computing on the CPU too.
    assert parts["image"] == "vendor/redis-redisearch:gpu"
    assert parts["command"][:3] == ["redis-server", "--loadmodule", "/opt/modules/redisearch.so"]
    assert "deploy" in parts and "platform" not in parts
    assert "# redis-parts: RediSearch (GPU) published on port 6379" in gen.header("store")
    main_redis = gen.service("box", "redis-main")
    assert main_redis["image"] == "redis:7.2" and "--loadmodule" not in main_redis["command"]
    # The agent opens the instance it needs the module on, though no port of it is bound there.
    assert "GRAPHRUN_REDIS_PARTS" in gen.service("box", "search")["environment"]


def test_two_modules_on_one_instance_are_refused_naming_the_agents(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(tmp_path, "  a: {type: 'cell_agents:Search', params: {index: main}}\n"
                            "  b: {type: 'cell_agents:Search', params: {index: main, module: RedisGraph}}\n", capsys)
    assert "'main'" in err and "a needs RediSearch" in err and "b needs RedisGraph" in err


def test_a_module_on_an_instance_the_graph_lacks_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(tmp_path, "  a: {type: 'cell_agents:Search', params: {index: vectors}}\n", capsys)
    assert "agent 'a' needs a Redis module on instance(s) vectors" in err


def test_an_override_can_extend_the_default_or_replace_it(tmp_path: Path) -> None:
    gen = compose_cell(tmp_path, "  panel: {type: 'cell_agents:Panel'}\n  quiet: {type: 'cell_agents:QuietPanel'}\n")
    panel = gen.service("local", "panel")
    # The default (127.0.0.1 is this machine: the host's network), and the override's device.
    assert panel["network_mode"] == "host" and panel["devices"] == ["/dev/ttyS0:/dev/ttyS0"]
    assert panel["environment"]["GRAPHRUN_REDIS_MAIN"] == "redis://127.0.0.1:6379/0"
    quiet = gen.service("local", "quiet")
    assert "network_mode" not in quiet and "devices" not in quiet


def test_a_hook_that_returns_no_deployment_is_named_in_the_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(tmp_path, "  odd: {type: 'cell_agents:Broken'}\n", capsys)
    assert "agent 'odd': Broken.deployment() returned dict, not a graphrun Deployment" in err


def test_the_engine_s_compose_knows_no_agent_type_by_name() -> None:
    """What containers of cameras, GPUs and RedisAI need is said by those agents' classes."""
    source = (REPO / "runtime" / "compose.py").read_text()
    for word in ("camera", "classification", "genicam", "opencv", "redisai", "cuda", "modbus", "hmi"):
        assert word not in source.lower(), word


# --- secrets an agent's class says it reads: Deployment.secrets ----------------------------

OPERATOR_DESK = """\
name: desk
redis: {main: {}}
agents:
  cam: {type: camera, params: {source: synthetic}}
  show: {type: examples.printer, inputs: {values: cam.frames}}
  hmi: {type: hmi, params: {host: 0.0.0.0, port: 8080}, inputs: {frames: {front: cam.frames}}}
  gateway: {type: gateway, params: {host: 0.0.0.0, port: 8000}}
"""


def test_the_hmi_and_the_gateway_read_the_operator_token_from_one_compose_secret(tmp_path: Path) -> None:
    gen = compose(tmp_path, OPERATOR_DESK)
    for agent in ("hmi", "gateway"):
        service = gen.service("local", agent)
        assert service["environment"]["GRAPHRUN_OPERATOR_TOKEN_FILE"] == "/run/secrets/operator_token"
        assert "operator_token" in service["secrets"]
        assert "GRAPHRUN_OPERATOR_TOKEN" not in service["environment"]  # the token itself is never in the file
        assert f"# {agent}: reads the secret operator_token from ./secrets/operator_token\n" in gen.header("local")
    assert gen.docs["local"]["secrets"]["operator_token"] == {"file": "./secrets/operator_token"}
    assert list(gen.docs["local"]["secrets"]).count("operator_token") == 1
    show = gen.service("local", "show")
    assert "operator_token" not in show["secrets"] and "GRAPHRUN_OPERATOR_TOKEN_FILE" not in show["environment"]


def test_the_mounted_secret_file_is_what_the_agent_reads(tmp_path: Path) -> None:
    """The variable compose sets names the file graphrun.operator_token() reads (the mount made here)."""
    from graphrun import operator_token

    gen = compose(tmp_path, OPERATOR_DESK)
    mounted = tmp_path / "run-secrets"
    mounted.mkdir()
    (mounted / "operator_token").write_text("s3cret-token\n")
    environ = {k: v.replace("/run/secrets", str(mounted)) for k, v in gen.service("local", "hmi")["environment"].items()
               if isinstance(v, str)}
    assert operator_token(environ=environ) == "s3cret-token"


def test_a_custom_agent_s_secrets_are_mounted_from_the_secrets_folder(tmp_path: Path) -> None:
    gen = compose_cell(tmp_path, "  lic: {type: 'cell_agents:Licensed'}\n")
    lic = gen.service("local", "lic")
    assert lic["environment"]["GRAPHRUN_SCANNER_LICENSE_FILE"] == "/run/secrets/scanner_license"
    assert lic["secrets"] == ["redis_password_lic", "scanner_license"]
    assert gen.docs["local"]["secrets"]["scanner_license"] == {"file": "./secrets/scanner_license"}
