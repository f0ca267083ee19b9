"""TLS and mTLS on SSL listeners (broker/tls.py, docs/security.md) with real clients: confluent-kafka, kcat,
kafka-python and aiokafka produce and consume with client certificates made by the test; the principal comes
from the certificate through ssl.principal.mapping.rules; an untrusted certificate, no certificate, a
plaintext client and TLS 1.1 are refused while the broker goes on serving everyone else."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time

import pytest
import trio
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from inprocess_broker import start_broker
from kraft_cluster import KRaftCluster
from python_clients import aiokafka_round_trip, kafka_python_round_trip
from kafka_reads import read_values
from lodestream.broker.broker import Broker
from lodestream.broker.config import BrokerConfig, ConfigError
from lodestream.broker.session import ANONYMOUS, KafkaPrincipal
from lodestream.protocol.codec import encode_request
from lodestream.protocol.messages import request_builder
from lodestream.broker.tls import AuthenticationFailed, map_principal, parse_mapping_rules, principal_of, subject_dn
from tls_certs import CertificateAuthority

RULES = "RULE:^CN=([^,]+),OU=eng,.*$/$1/L,DEFAULT"
DEADLINE_S = 30
DELAY_MS = 300


@pytest.fixture
def certificates(tmp_path):
    ca = CertificateAuthority(tmp_path / "ca")
    rogue = CertificateAuthority(tmp_path / "rogue", "Rogue CA")
    return {
        "authority": ca,
        "ca": ca.cert_path,
        "server": ca.issue("server", server=True, O="Acme", CN="broker"),
        "alice": ca.issue("alice", C="US", O="Acme", OU="eng", CN="Alice"),
        "mallory": rogue.issue("mallory", O="Acme", OU="eng", CN="mallory"),
    }


@pytest.fixture
async def tls_broker(tmp_path, certificates):
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **{
            "listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(certificates["server"].both),
            "ssl.truststore.location": str(certificates["ca"]), "ssl.client.auth": "required",
            "ssl.principal.mapping.rules": RULES, "connection.failed.authentication.delay.ms": str(DELAY_MS)})
        yield running, f"127.0.0.1:{running.port}"
        nursery.cancel_scope.cancel()
    running.broker.close()


def confluent_settings(certificates, client: str = "alice") -> dict:
    return {"security.protocol": "SSL", "ssl.ca.location": str(certificates["ca"]),
            "ssl.certificate.location": str(certificates[client].cert),
            "ssl.key.location": str(certificates[client].key)}


def round_trip_confluent(bootstrap: str, certificates, topic: str) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap, **confluent_settings(certificates)})
    for index in range(10):
        producer.produce(topic, b"secret-%d" % index)
    assert producer.flush(DEADLINE_S) == 0
    return read_values({"bootstrap.servers": bootstrap, "group.id": "tls", **confluent_settings(certificates)},
                       topic, 10, deadline_s=DEADLINE_S)


async def test_confluent_kafka_over_mtls_gets_the_principal_its_certificate_maps_to(tls_broker, certificates):
    running, bootstrap = tls_broker
    values = await trio.to_thread.run_sync(round_trip_confluent, bootstrap, certificates, "over-tls")
    assert values == [b"secret-%d" % index for index in range(10)]
    context = ssl.create_default_context(cafile=str(certificates["ca"]))
    context.load_cert_chain(str(certificates["alice"].cert), str(certificates["alice"].key))
    stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", running.port), context,
                            server_hostname="127.0.0.1")
    try:
        assert not await _refused(stream)
        principals = {connection.session.principal for connection in running.broker.connections}
        assert KafkaPrincipal("User", "alice") in principals  # "CN=Alice,OU=eng,O=Acme,C=US", lower-cased by L
        assert ANONYMOUS not in principals
    finally:
        await trio.aclose_forcefully(stream)


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is installed by .ci/run")
async def test_kcat_over_mtls(tls_broker, certificates):
    running, bootstrap = tls_broker
    options = ["-b", bootstrap, "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={certificates['ca']}",
               "-X", f"ssl.certificate.location={certificates['alice'].cert}",
               "-X", f"ssl.key.location={certificates['alice'].key}"]

    def run() -> str:
        subprocess.run(["kcat", "-P", "-t", "kcat-tls", *options], input=b"one\ntwo\n", check=True, timeout=DEADLINE_S)
        return subprocess.run(["kcat", "-C", "-t", "kcat-tls", "-o", "beginning", "-e", "-q", *options],
                              capture_output=True, check=True, timeout=DEADLINE_S).stdout.decode()

    assert await trio.to_thread.run_sync(run) == "one\ntwo\n"


async def test_kafka_python_and_aiokafka_over_mtls(tls_broker, certificates):
    running, bootstrap = tls_broker
    context = ssl.create_default_context(cafile=str(certificates["ca"]))
    context.load_cert_chain(str(certificates["alice"].cert), str(certificates["alice"].key))
    security = dict(security_protocol="SSL", ssl_context=context)
    assert await trio.to_thread.run_sync(kafka_python_round_trip, bootstrap, "python-tls", security) == \
        [b"kp-0", b"kp-1", b"kp-2"]
    assert await trio.to_thread.run_sync(aiokafka_round_trip, bootstrap, "aio-tls", security) == \
        [b"aio-0", b"aio-1", b"aio-2"]

async def _refused(stream: trio.abc.Stream) -> bool:
    """Whether the broker closes this client's connection before answering an ApiVersions request."""
    request = encode_request(1, request_builder(18, 3).ApiVersionsRequest(
        client_software_name="probe", client_software_version="1"))
    try:
        if isinstance(stream, trio.SSLStream):
            await stream.do_handshake()
        await stream.send_all(request)
        with trio.fail_after(DEADLINE_S):
            return await stream.receive_some(4) == b""
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return True


async def _refused_at(port: int, context: ssl.SSLContext | None) -> bool:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    if context is not None:
        stream = trio.SSLStream(stream, context, server_hostname="127.0.0.1")
    try:
        return await _refused(stream)
    finally:
        await trio.aclose_forcefully(stream)


async def test_untrusted_missing_and_plaintext_clients_and_old_tls_are_refused(tls_broker, certificates):
    running, bootstrap = tls_broker

    def client_context(certificate: str | None, maximum=ssl.TLSVersion.TLSv1_3) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(certificates["ca"]))
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
        if certificate is not None:
            context.load_cert_chain(str(certificates[certificate].cert), str(certificates[certificate].key))
        return context

    assert not await _refused_at(running.port, client_context("alice"))
    started = time.monotonic()
    assert await _refused_at(running.port, client_context("mallory"))  # signed by a CA the broker does not trust
    assert time.monotonic() - started >= DELAY_MS / 1000  # closed after connection.failed.authentication.delay.ms
    assert await _refused_at(running.port, client_context(None))  # ssl.client.auth=required
    assert await _refused_at(running.port, None)  # Kafka bytes on a TLS port
    try:
        old = client_context("alice", ssl.TLSVersion.TLSv1_1)
    except ssl.SSLError:
        old = None
    if old is not None:  # this OpenSSL may not even offer TLS 1.1; either way no TLS 1.1 session is served
        assert await _refused_at(running.port, old)
    values = await trio.to_thread.run_sync(round_trip_confluent, bootstrap, certificates, "still-served")
    assert len(values) == 10


def test_ssl_listeners_without_a_usable_key_or_with_old_protocols_refuse_to_start(tmp_path, certificates):
    base = {"listeners": "SSL://127.0.0.1:0", "log.dirs": str(tmp_path / "data")}
    with pytest.raises(ConfigError, match="ssl.keystore.location"):
        Broker(BrokerConfig(base))
    with pytest.raises(ConfigError, match="ssl.keystore.type"):
        BrokerConfig({**base, "ssl.keystore.type": "JKS"})
    keystore = {**base, "ssl.keystore.location": str(certificates["server"].both)}
    with pytest.raises(ConfigError, match="ssl.enabled.protocols: TLSv1.1"):
        Broker(BrokerConfig({**keystore, "ssl.enabled.protocols": "TLSv1.1,TLSv1.2"}))
    with pytest.raises(ConfigError, match="ssl.truststore"):
        Broker(BrokerConfig({**keystore, "ssl.client.auth": "required"}))
    with pytest.raises(ConfigError, match="ssl.keystore.location: cannot load"):
        Broker(BrokerConfig({**base, "ssl.keystore.location": str(certificates["ca"])}))  # no key in it
    cluster = {"controller.quorum.voters": "1@127.0.0.1:19093,2@127.0.0.1:19094"}
    with pytest.raises(ConfigError, match="inter-broker listener: brokers check each other's certificates"):
        Broker(BrokerConfig({**keystore, **cluster, "listeners": "SSL://127.0.0.1:0,CONTROLLER://127.0.0.1:0",
                             "inter.broker.listener.name": "SSL"}))
    with pytest.raises(ConfigError, match="SASL between brokers is not built"):
        Broker(BrokerConfig({**keystore, **cluster, "listeners": "SASL_SSL://127.0.0.1:0,CONTROLLER://127.0.0.1:0",
                             "inter.broker.listener.name": "SASL_SSL", "sasl.enabled.mechanisms": "SCRAM-SHA-512"}))


def test_principal_mapping_follows_kafkas_rules():
    certificate = {"subject": ((("countryName", "US"),), (("organizationName", "Acme, Inc."),),
                               (("organizationalUnitName", "eng"),), (("commonName", "Alice"),))}
    dn = subject_dn(certificate)
    assert dn == "CN=Alice,OU=eng,O=Acme\\, Inc.,C=US"  # most specific first, commas escaped (RFC 2253)
    assert map_principal(dn, parse_mapping_rules("DEFAULT")) == dn
    assert map_principal(dn, parse_mapping_rules(RULES)) == "alice"
    assert map_principal(dn, parse_mapping_rules("RULE:^CN=(.*?),OU=(.*?),.*$/$1@$2/U")) == "ALICE@ENG"
    assert map_principal("CN=svc/a,O=x", parse_mapping_rules("RULE:^CN=(.*?)\\/a,.*$/$1/")) == "svc"
    with pytest.raises(AuthenticationFailed, match="no ssl.principal.mapping.rules rule"):
        map_principal("CN=bob,OU=sales", parse_mapping_rules("RULE:^CN=(.*?),OU=eng$/$1/"))
    with pytest.raises(ConfigError, match="ssl.principal.mapping.rules"):
        parse_mapping_rules("RULE:^CN=(.*$/$1/")
    assert principal_of(None, parse_mapping_rules("DEFAULT")) == ANONYMOUS


async def test_certificates_reload_through_alter_configs_without_a_restart(tls_broker, certificates, tmp_path):
    """As Kafka: AlterConfigs of ssl.keystore.location on the broker, even to the path it has, reads the
    files again; new connections get the new certificate. A keystore that cannot load is refused."""
    running, bootstrap = tls_broker
    keystore = certificates["server"].both

    async def served_common_name() -> str:
        context = ssl.create_default_context(cafile=str(certificates["ca"]))
        context.load_cert_chain(str(certificates["alice"].cert), str(certificates["alice"].key))
        stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", running.port), context,
                                server_hostname="127.0.0.1")
        try:
            await stream.do_handshake()
            return dict(pair[0] for pair in stream.getpeercert()["subject"])["commonName"]
        finally:
            await trio.aclose_forcefully(stream)

    def alter(key: str, value: str) -> None:
        admin = AdminClient({"bootstrap.servers": bootstrap, **confluent_settings(certificates)})
        resource = ConfigResource("broker", str(running.broker.node_id), incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(DEADLINE_S)

    assert await served_common_name() == "broker"
    renewed = certificates["authority"].issue("server-2", server=True, O="Acme", CN="broker-renewed")
    keystore.write_bytes(renewed.both.read_bytes())  # the same CA, a new server certificate, the same file
    assert await served_common_name() == "broker"  # not before the broker is told
    await trio.to_thread.run_sync(alter, "ssl.keystore.location", str(keystore))
    assert await served_common_name() == "broker-renewed"
    with pytest.raises(Exception, match="ssl.keystore.location: cannot load"):
        await trio.to_thread.run_sync(alter, "ssl.keystore.location", str(certificates["ca"]))
    assert await served_common_name() == "broker-renewed"


def test_brokers_replicate_to_each_other_over_mtls(tmp_path, certificates):
    """Two brokers whose inter-broker listener is SSL with ssl.client.auth=required: the follower fetches (and
    an acks=all produce waits for it) over TLS, each broker presenting its certificate and checking the other's
    against the trust store and the host name."""
    tls = {"ssl.keystore.location": str(certificates["server"].both), "ssl.truststore.location": str(certificates["ca"]),
           "ssl.client.auth": "required", "default.replication.factor": "2", "min.insync.replicas": "2"}
    cluster = KRaftCluster(tmp_path, roles={1: "broker,controller", 2: "broker"}, overrides=tls, client_protocol="SSL")
    try:
        cluster.start()
        settings = {"bootstrap.servers": cluster.bootstrap(), "security.protocol": "SSL",
                    "ssl.ca.location": str(certificates["ca"]),
                    "ssl.certificate.location": str(certificates["alice"].cert),
                    "ssl.key.location": str(certificates["alice"].key)}
        admin = AdminClient(settings)
        deadline = time.monotonic() + DEADLINE_S
        while len(admin.list_topics(timeout=DEADLINE_S).brokers) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # both brokers registered (polled within a deadline)
        admin.create_topics([NewTopic("replicated", 1, 2)])["replicated"].result(DEADLINE_S)
        producer = Producer({**settings, "acks": "all"})
        for index in range(5):
            producer.produce("replicated", b"r-%d" % index)
        assert producer.flush(DEADLINE_S) == 0  # acks=all with min.insync.replicas=2: the follower has them
        partition = admin.list_topics("replicated", timeout=DEADLINE_S).topics["replicated"].partitions[0]
        assert sorted(partition.isrs) == [1, 2]
    finally:
        cluster.stop()
