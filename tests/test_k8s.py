"""`graphrun k8s`: Kubernetes manifests per node, generated from a graph file.

No cluster is needed: every manifest is checked against the Kubernetes JSON schemas that
the kubernetes-validate package ships (strict: unknown keys are refused), and the command
line each agent's pod runs, with the environment its manifest gives it, is run here as a
process against a real redis-server, its probes with it.
"""

from __future__ import annotations

import os
import re
import secrets as secrets_module
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from conftest import wait_until
from deploy_helpers import fresh_and_committed, generate_into
from graphrun.cli import main
from graphrun.commands.status import check
from graphrun.graph import Graph, load_graph
from graphrun.k8s import MARKER
from graphrun.redis_server import RedisServer, free_port
from graphrun.runner import AgentRunner
from graphrun.secrets import REDIS_USER

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")

REPO = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.30"  # k3s of 2024 and later
COMMITTED = REPO / "deploy" / "k8s"

LINE = """\
name: line
redis:
  cams: {}
  edge: {maxmemory: 1gb, persistence: rdb}
  plant: {url: "redis://db.plant:6379/0"}
nodes:
  camera_node: {redis: cams, platform: linux/arm64}
  infer: {redis: edge}
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
    replicas: 3
    params: {providers: [CUDAExecutionProvider, CPUExecutionProvider]}
    inputs: {frames: cam_front.frames}
    env: {OMP_NUM_THREADS: "2"}
  show:
    type: examples.printer
    node: hmi
    inputs: {values: cls.verdicts}
    outputs: {}
  archive:
    type: examples.doubler
    node: hmi
    inputs: {numbers: "plant:numbers"}
"""


class Manifests:
    """What one `graphrun k8s` wrote: node -> its documents, and the shared documents."""

    def __init__(self, out: Path):
        self.out = out
        self.text = {p.stem: p.read_text() for p in sorted(out.glob("*.yaml"))}
        self.docs = {node: [d for d in yaml.safe_load_all(text) if d] for node, text in self.text.items()}

    def find(self, node: str, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.docs[node] if d["kind"] == kind and d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind} {name} in {node}.yaml: {len(found)} found"
        return found[0]

    def kinds(self, node: str) -> list[tuple[str, str]]:
        return [(d["kind"], d["metadata"]["name"]) for d in self.docs[node]]

    def pod(self, node: str, deployment: str) -> dict[str, Any]:
        return self.find(node, "Deployment", deployment)["spec"]["template"]["spec"]


def generate(tmp_path: Path, text: str, *args: str, name: str = "graph.yaml") -> Manifests:
    return Manifests(generate_into("k8s", tmp_path, text, *args, name=name))


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


# --- the schema --------------------------------------------------------------------------------


def test_the_schema_check_refuses_what_kubernetes_would_refuse() -> None:
    good = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis-main"},
            "spec": {"ports": [{"port": 6379}]}}
    validate(good)
    for bad in ({**good, "spec": {"ports": [{"port": "six"}]}},  # a wrong type
                {**good, "spec": {"ports": [{"port": 6379}], "nodeSelector": {}}}):  # a key Services do not have
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(bad)


def test_every_manifest_follows_the_kubernetes_schema(tmp_path: Path) -> None:
    generated = generate(tmp_path, LINE)
    documents = [d for docs in generated.docs.values() for d in docs]
    documents += [d for p in sorted(COMMITTED.glob("*/*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert len(documents) > 30
    for document in documents:
        validate(document)


# --- consistent with the graph ---------------------------------------------------------------


def test_each_node_gets_a_file_of_its_own_agents_and_the_redis_it_hosts(tmp_path: Path) -> None:
    gen = generate(tmp_path, LINE)
    assert sorted(gen.docs) == ["camera_node", "graph", "hmi", "infer"]
    assert gen.kinds("camera_node") == [
        ("Service", "redis-cams"), ("StatefulSet", "redis-cams"),
        ("Secret", "redis-user-cam-front"), ("Deployment", "cam-front"),
        ("Secret", "redis-user-cam-usb"), ("Deployment", "cam-usb")]
    assert [k for k in gen.kinds("hmi") if k[0] == "Deployment"] == [("Deployment", "show"), ("Deployment", "archive")]
    assert not [k for k in gen.kinds("hmi") if k[0] in ("StatefulSet", "Service")]  # hmi hosts no Redis
    # An instance with a url runs outside the graph: nothing runs it.
    assert not [k for docs in gen.docs.values() for k in [(d["kind"], d["metadata"]["name"]) for d in docs]
                if k[1] == "redis-plant"]


def test_an_agent_is_a_deployment_with_the_graph_s_replicas_pinned_to_its_node(tmp_path: Path) -> None:
    gen = generate(tmp_path, LINE)
    cls = gen.find("infer", "Deployment", "cls")
    assert cls["spec"]["replicas"] == 3
    assert cls["spec"]["template"]["spec"]["nodeSelector"] == {"graphrun.io/node": "infer"}
    labels = cls["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in cls["spec"]["selector"]["matchLabels"].items())
    # The node's platform pins its pods to machines of that architecture too.
    assert gen.pod("camera_node", "cam-usb")["nodeSelector"] == {
        "graphrun.io/node": "camera_node", "kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"}
    container = gen.pod("infer", "cls")["containers"][0]
    assert container["args"] == ["agent", "/graph/graph.yaml", "cls", "--consumer", "cls-$(GRAPHRUN_POD)"]
    assert env_of(container)["GRAPHRUN_POD"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env_of(container)["OMP_NUM_THREADS"] == "2"  # the agent's env from the graph
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}}  # a CUDA provider
    assert gen.pod("infer", "cls")["terminationGracePeriodSeconds"] == 20


def test_a_hosted_redis_is_a_statefulset_with_a_volume_claim_and_a_service_on_its_node(tmp_path: Path) -> None:
    gen = generate(tmp_path, LINE)
    statefulset = gen.find("infer", "StatefulSet", "redis-edge")
    assert statefulset["spec"]["replicas"] == 1
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"graphrun.io/node": "infer"}
    redis_container = pod["containers"][0]
    assert redis_container["command"] == ["redis-server", "--appendonly", "no", "--save", "3600 1 300 100 60 10000",
                                          "--maxmemory", "1gb", "--aclfile", "/etc/redis/acl/edge.acl"]
    assert redis_container["volumeMounts"] == [{"name": "data", "mountPath": "/data"},
                                               {"name": "acl", "mountPath": "/etc/redis/acl", "readOnly": True}]
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # Probed as the observer, who may only read.
    assert redis_container["readinessProbe"]["exec"]["command"] == [
        "sh", "-c", "redis-cli --user line-observer ping | grep -q PONG"]
    assert env_of(redis_container) == {"REDISCLI_AUTH": {"secretKeyRef": {"name": "redis-user-observer",
                                                                          "key": "password"}}}
    service = gen.find("infer", "Service", "redis-edge")
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis"}]


def test_each_redis_loads_the_graph_s_acl_users_written_by_an_init_container(tmp_path: Path) -> None:
    gen = generate(tmp_path, LINE)
    pod = gen.find("camera_node", "StatefulSet", "redis-cams")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["args"] == ["acl", "/graph/graph.yaml", "--instance", "cams", "--format", "aclfile", "--out", "/acl"]
    # The passwords of the instance's users only: the cameras write there, cls reads, archive's
    # output (left out, on a node without Redis) goes to the first instance, and the observer.
    assert env_of(init) == {f"GRAPHRUN_REDIS_PASSWORD_{role.upper()}": {"secretKeyRef": {
        "name": f"redis-user-{role.replace('_', '-')}", "key": "password"}}
        for role in ("cam_front", "cam_usb", "cls", "archive", "observer")}
    assert "GRAPHRUN_REDIS_PASSWORD_SHOW" not in env_of(init)  # show reads from edge only
    assert {"name": "acl", "mountPath": "/acl"} in init["volumeMounts"]
    assert {"name": "acl", "emptyDir": {}} in pod["volumes"]


def test_agents_reach_a_hosted_redis_through_its_service_and_others_through_the_graph(tmp_path: Path) -> None:
    gen = generate(tmp_path, LINE)
    services = {d["metadata"]["name"] for docs in gen.docs.values() for d in docs if d["kind"] == "Service"}
    env = env_of(gen.pod("infer", "cls")["containers"][0])
    assert env["GRAPHRUN_REDIS_CAMS"] == "redis://redis-cams:6379/0"  # on another node: one cluster network
    assert env["GRAPHRUN_REDIS_EDGE"] == "redis://redis-edge:6379/0"
    for docs in gen.docs.values():
        for d in docs:
            if d["kind"] == "Deployment":
                for value in env_of(d["spec"]["template"]["spec"]["containers"][0]).values():
                    if isinstance(value, str) and value.startswith("redis://"):
                        assert value.split("//")[1].split(":")[0] in services
    # The url of an instance outside the graph is read from the mounted graph.
    assert "GRAPHRUN_REDIS_PLANT" not in env_of(gen.pod("hmi", "archive")["containers"][0])


def test_a_genicam_camera_is_on_the_host_network_and_keeps_the_cluster_s_dns(tmp_path: Path) -> None:
    gen = generate(tmp_path, LINE)
    camera = gen.find("camera_node", "Deployment", "cam-front")
    pod = camera["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert camera["spec"]["strategy"] == {"type": "Recreate"}  # one pod at a time on the host's network
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "host-0", "mountPath": "/opt/vendor/lib", "readOnly": True} in mounts  # the GenTL producer
    assert {"name": "host-0", "hostPath": {"path": "/opt/vendor/lib"}} in pod["volumes"]
    usb = gen.pod("camera_node", "cam-usb")
    assert "hostNetwork" not in usb
    assert {"name": "device-0", "hostPath": {"path": "/dev/video2", "type": "CharDevice"}} in usb["volumes"]


def test_no_manifest_holds_a_password_and_each_agent_reads_only_its_own_secret(tmp_path: Path) -> None:
    gen = generate(tmp_path, LINE)
    secret = gen.find("infer", "Secret", "redis-user-cls")
    assert secret["stringData"] == {"username": "line-cls"}  # the password is the operator's to add
    assert gen.find("graph", "Secret", "redis-user-observer")["stringData"] == {"username": "line-observer"}
    env = env_of(gen.pod("infer", "cls")["containers"][0])
    assert env[REDIS_USER] == "line-cls"
    assert env["GRAPHRUN_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-user-cls", "key": "password"}}
    assert "password:" not in "".join(gen.text.values())
    for docs in gen.docs.values():
        for d in docs:
            if d["kind"] == "Deployment":
                refs = {v["secretKeyRef"]["name"] for v in env_of(d["spec"]["template"]["spec"]["containers"][0]).values()
                        if isinstance(v, dict) and "secretKeyRef" in v}
                assert refs == {f"redis-user-{d['metadata']['name']}"}
                assert d["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_probes_check_the_heartbeat_of_the_pod_s_own_consumer(tmp_path: Path) -> None:
    gen = generate(tmp_path, LINE)
    container = gen.pod("infer", "cls")["containers"][0]
    command = ["sh", "-c", 'exec graphrun status /graph/graph.yaml --agent cls --consumer "cls-$GRAPHRUN_POD" --check']
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == command
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] == 60


def test_the_graph_file_is_a_configmap_every_agent_mounts(tmp_path: Path) -> None:
    gen = generate(tmp_path, LINE)
    graph_map = gen.find("graph", "ConfigMap", "graphrun-graph")
    assert graph_map["data"] == {"graph.yaml": LINE}
    pod = gen.pod("hmi", "show")
    assert {"name": "graph", "configMap": {"name": graph_map["metadata"]["name"]}} in pod["volumes"]
    assert {"name": "graph", "mountPath": "/graph", "readOnly": True} in pod["containers"][0]["volumeMounts"]


def test_variables_the_graph_reads_come_from_an_optional_settings_configmap(tmp_path: Path) -> None:
    gen = generate(tmp_path, LINE.replace('"redis://db.plant:6379/0"', '"redis://${PLANT_DB:-db.plant}:6379/0"'))
    container = gen.pod("hmi", "archive")["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "graphrun-settings", "optional": True}}]
    assert "PLANT_DB" in gen.text["hmi"].split("---")[0]  # the header says which


def test_generation_is_deterministic_and_drops_files_of_nodes_gone(tmp_path: Path) -> None:
    first = generate(tmp_path, LINE).text
    (tmp_path / "out" / "kustomization.yaml").write_text("resources: []\n")  # not generated: left alone
    assert generate(tmp_path, LINE).text == {**first, "kustomization": "resources: []\n"}
    fewer = LINE.replace("  hmi: {}\n", "").replace("    node: hmi\n", "    node: infer\n")
    assert sorted(generate(tmp_path, fewer).text) == ["camera_node", "graph", "infer", "kustomization"]


def test_an_unknown_node_and_a_node_named_graph_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(LINE)
    assert main(["k8s", str(graph), "--node", "press", "--out", str(tmp_path / "out")]) == 1
    assert "no node 'press' (nodes: camera_node, infer, hmi)" in capsys.readouterr().err
    graph.write_text(LINE.replace("hmi", "graph"))
    assert main(["k8s", str(graph), "--out", str(tmp_path / "out2")]) == 1
    assert "would overwrite the shared graph.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("folder", sorted(p.name for p in COMMITTED.iterdir() if p.is_dir()))
def test_the_committed_manifests_equal_a_fresh_generation(tmp_path: Path, folder: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    committed = COMMITTED / folder
    (graph_map,) = next(d for d in yaml.safe_load_all((committed / "graph.yaml").read_text())
                        if d and d["kind"] == "ConfigMap")["data"]
    source = REPO / "graphs" / graph_map
    assert source.exists(), f"deploy/k8s/{folder} has no source in graphs/"
    fresh, stale = fresh_and_committed("k8s", source, committed, tmp_path / folder, monkeypatch)
    assert fresh == stale, f"deploy/k8s/{folder} is stale: run `graphrun k8s graphs/{graph_map}`"
    assert all(MARKER in text.splitlines()[0] for text in stale.values())


# --- the pods' command lines, run here ----------------------------------------------------------


def _expand(text: str, env: dict[str, str]) -> str:
    """$(VAR) as Kubernetes expands it in a container's args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def _resolve(item: dict[str, Any], pod: str, passwords: dict[str, str], services: dict[str, str]) -> str:
    """A container's variable as Kubernetes gives it: a value (a Service's address replaced by
    a local server's), the pod's name, or a key of a Secret (its password made here)."""
    if "value" in item:
        return re.sub(r"redis://(redis-[a-z0-9-]+):6379/0", lambda m: services[m[1]], item["value"])
    source = item["valueFrom"]
    if "fieldRef" in source:
        return pod
    assert source["secretKeyRef"]["key"] in ("password", "value")  # a Redis user's, or a secret an agent reads
    return passwords[source["secretKeyRef"]["name"]]


def test_every_agent_s_command_line_runs_as_a_process_and_its_probe_passes(tmp_path: Path) -> None:
    """The committed finger-follower manifests, run here: each Redis StatefulSet's init
    container writes its ACL file from the users' Secrets (passwords made here), a local
    redis-server per instance loads it; each Deployment's container runs as a process with
    its args and environment (Kubernetes' $(VAR) expansion done here, the Services' addresses
    replaced by the local servers', the HMI and PLC simulator on free ports instead of their
    fixed ones), the graph from its ConfigMap. Every agent logs in as its own user, reports
    running through its own probe command, the line delivers PLC results, and SIGTERM stops each."""
    folder = COMMITTED / "finger_follower"
    docs = [d for p in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    graph_dir = tmp_path / "graph"
    graph_dir.mkdir()
    hmi_port, plc_port = free_port(), free_port()
    (graph_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    for name, text in graph_map["data"].items():
        text = text.replace("port: 8080", f"port: {hmi_port}").replace("params: {port: 5020}", f"params: {{port: {plc_port}}}")
        (graph_dir / name).write_text(text)
    local = lambda arg: arg.replace("/graph/", f"{graph_dir}/")
    secrets = {d["metadata"]["name"]: d.get("stringData", {}).get("username") for d in docs if d["kind"] == "Secret"}
    passwords = {name: secrets_module.token_hex(16) for name in secrets}  # and the operator token's value
    observer = (secrets["redis-user-observer"], passwords["redis-user-observer"])
    servers: dict[str, RedisServer] = {}
    services: dict[str, str] = {}
    try:
        for statefulset in (d for d in docs if d["kind"] == "StatefulSet"):
            pod = statefulset["spec"]["template"]["spec"]
            (init,) = pod["initContainers"]
            acl_dir = tmp_path / statefulset["metadata"]["name"]
            env = {i["name"]: _resolve(i, "", passwords, {}) for i in init["env"]}
            args = [str(acl_dir) if a == "/acl" else local(a) for a in init["args"]]
            made = subprocess.run([sys.executable, "-m", "graphrun", *args], env={**os.environ, **env},
                                  capture_output=True, text=True, check=False, timeout=120)
            assert made.returncode == 0, made.stderr
            instance = args[args.index("--instance") + 1]
            server = RedisServer(name=instance, persistence="none", aclfile=acl_dir / f"{instance}.acl",
                                 login=observer).start()
            servers[statefulset["metadata"]["name"]] = server
            services[statefulset["metadata"]["name"]] = server.url
        pods: list[tuple[str, list[str], dict[str, str], list[str]]] = []
        for deployment in (d for d in docs if d["kind"] == "Deployment"):
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            pod_name = f"{deployment['metadata']['name']}-7d9f-x{len(pods)}"
            env = {"PLC_PORT": str(plc_port),  # from the settings ConfigMap
                   "GRAPHRUN_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path / "home"),
                   "XDG_DATA_HOME": str(tmp_path / "home" / "data")}  # the pod's own folders
            env.update({i["name"]: _resolve(i, pod_name, passwords, services) for i in container["env"]})
            args = [local(_expand(a, env)) for a in container["args"]]
            probe = [local(a) for a in container["readinessProbe"]["exec"]["command"]]
            pods.append((deployment["metadata"]["name"], args, env, probe))
        agents = yaml.safe_load(graph_map["data"]["finger_follower.yaml"])["agents"]
        assert sorted(name for name, *_ in pods) == sorted(a.replace("_", "-") for a in agents)  # one per agent
        processes = {name: subprocess.Popen([sys.executable, "-m", "graphrun", *args], env={**os.environ, **env},
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for name, args, env, _ in pods}
        graph = load_graph(graph_dir / "finger_follower.yaml")
        as_observer = {instance: servers[f"redis-{instance}"].url.replace("//", f"//{observer[0]}:{observer[1]}@")
                       for instance in graph.redis}
        inference = redis.Redis.from_url(as_observer["inference"])
        try:
            for name, args, env, probe in pods:
                agent, consumer = args[2], args[-1]

                def running(name: str = name, agent: str = agent, consumer: str = consumer) -> bool:
                    assert processes[name].poll() is None, f"{name} exited: {processes[name].communicate()[0]}"
                    return check(graph, agent, as_observer, consumer=consumer)[0]
                wait_until(running, timeout=180, what=f"{name}'s heartbeat")
                answer = subprocess.run(probe, env={**os.environ, **env}, capture_output=True, text=True,
                                        timeout=120, check=False)
                assert answer.returncode == 0, f"{name}'s probe: {answer.stdout}{answer.stderr}"
                assert f"{consumer}: running" in answer.stdout
            wait_until(lambda: inference.xlen("plc.results") >= 3, timeout=120, what="PLC results of parts")
        finally:
            for process in processes.values():
                process.send_signal(signal.SIGTERM)
            outputs = {name: process.communicate(timeout=60)[0] for name, process in processes.items()}
        for name, process in processes.items():
            assert process.returncode == 0, f"{name}: {outputs[name]}"
        # Each replica's consumer is named after its pod, and logged in as its agent's user.
        plc_env = next(env for name, _, env, _ in pods if name == "plc")
        consumers = {c["name"].decode() for c in inference.xinfo_consumers("cls.front.verdicts", "plc")}
        assert consumers == {f"plc-{plc_env['GRAPHRUN_POD']}"}
        assert plc_env["GRAPHRUN_REDIS_USER"] == "finger_follower-plc"
    finally:
        for server in servers.values():
            server.close()


def test_an_instance_behind_sentinels_runs_no_redis_and_agents_find_it_in_the_graph(tmp_path: Path) -> None:
    gen = generate(tmp_path, """\
name: ha
redis:
  main: {sentinel: {master: line, addresses: ["10.0.0.7:26379", "10.0.0.8:26379"]}, wait_replicas: 1}
agents:
  counter: {type: examples.counter}
""")
    assert [k for k in gen.kinds("local") if k[0] in ("StatefulSet", "Service")] == []
    env = env_of(gen.pod("local", "counter")["containers"][0])
    assert "GRAPHRUN_REDIS_MAIN" not in env  # the mounted graph names the sentinels
    for docs in gen.docs.values():
        for document in docs:
            validate(document)


def test_a_pod_s_probe_answers_for_its_own_consumer_only(graph_file: Callable[..., Graph], redis_server: RedisServer,
                                                          start_agent: Callable[..., AgentRunner]) -> None:
    graph = graph_file("name: probe\nagents:\n  counter: {type: examples.counter, params: {rate: 5}}\n")
    start_agent(graph, "counter", consumer="counter-pod-a")
    urls = {"main": redis_server.url}
    wait_until(lambda: check(graph, "counter", urls, consumer="counter-pod-a")[0], what="pod a's heartbeat")
    healthy, why = check(graph, "counter", urls, consumer="counter-pod-b")
    assert not healthy and why == "counter-pod-b: unhealthy: no heartbeat"


OPERATOR_DESK = """\
name: desk
redis: {main: {}}
agents:
  cam: {type: camera, params: {source: synthetic}}
  hmi: {type: hmi, params: {host: 0.0.0.0, port: 8080}, inputs: {frames: {front: cam.frames}}}
  gateway: {type: gateway, replicas: 2, params: {host: 0.0.0.0, port: 8000}}
"""


def test_the_hmi_and_the_gateway_take_the_operator_token_from_one_secret_the_operator_fills(tmp_path: Path) -> None:
    gen = generate(tmp_path, OPERATOR_DESK)
    token = gen.find("graph", "Secret", "graphrun-operator-token")
    assert "stringData" not in token and "data" not in token  # the value is the operator's to add
    validate(token)
    for agent in ("hmi", "gateway"):
        env = env_of(gen.pod("local", agent)["containers"][0])
        assert env["GRAPHRUN_OPERATOR_TOKEN"] == {"secretKeyRef": {"name": "graphrun-operator-token", "key": "value"}}
        assert f"# {agent}: reads GRAPHRUN_OPERATOR_TOKEN from Secret graphrun-operator-token" in gen.text["local"]
    assert "GRAPHRUN_OPERATOR_TOKEN" not in env_of(gen.pod("local", "cam")["containers"][0])
