"""The REST API under the same principals and ACLs as Kafka clients (admin/auth.py, docs/security.md): HTTP
basic against the SCRAM users, bearer JWTs checked like OAUTHBEARER tokens, client certificates on an https://
listener, each operation authorized as its Kafka equivalent, listings filtered, and no login module (JAAS text)
accepted over REST."""

from __future__ import annotations

import base64
import ssl
import uuid

import httpx
import pytest
import trio

from inprocess_broker import start_broker
from lodestream.admin.rest import create_app
from lodestream.broker.authorizer import AUTHORIZER_CLASS_NAMES
from lodestream.broker.scram import credential_record, make_credential
from lodestream.consensus.records import AclRecord, ScramCredentialRecord
from lodestream.admin.service import serve_admin
from lodestream.broker.broker import TopicSpec
from test_sasl import TokenIssuer
from tls_certs import CertificateAuthority


def scram_record(user: str, password: str) -> ScramCredentialRecord:
    return credential_record(user, "SCRAM-SHA-512", make_credential("SCRAM-SHA-512", password, 4096))


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def rest(tmp_path):
    issuer = TokenIssuer(tmp_path)
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **{
            "listeners": "SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": "SCRAM-SHA-512,OAUTHBEARER",
            "sasl.oauthbearer.jwks.endpoint.url": issuer.jwks.as_uri(),
            "sasl.oauthbearer.expected.audience": "lodestream",
            "authorizer.class.name": AUTHORIZER_CLASS_NAMES[0], "super.users": "User:admin"})
        broker = running.broker
        await broker.propose([scram_record("admin", "admin-secret"), scram_record("alice", "alice-secret"),
                              *(AclRecord(uuid.uuid4(), 2, "orders", 3, "User:alice", "*", operation, 3)
                                for operation in (4, 8))])  # alice: WRITE and DESCRIBE on topic orders
        transport = httpx.ASGITransport(app=create_app(broker), client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://lodestream") as http:
            cluster = f"/v3/clusters/{broker.cluster_id}"
            for name in ("orders", "secret"):
                created = await http.post(f"{cluster}/topics", json={"topic_name": name, "partitions_count": 1},
                                          headers=basic("admin", "admin-secret"))
                assert created.status_code == 201, created.text
            yield http, cluster, issuer
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_rest_operations_are_authorized_as_their_kafka_equivalents(rest):
    http, cluster, _ = rest
    alice, admin = basic("alice", "alice-secret"), basic("admin", "admin-secret")
    listed = await http.get(f"{cluster}/topics", headers=alice)
    assert [t["topic_name"] for t in listed.json()["data"]] == ["orders"]  # secret is not listed
    assert {t["topic_name"] for t in (await http.get(f"{cluster}/topics", headers=admin)).json()["data"]} \
        >= {"orders", "secret"}
    assert (await http.get(f"{cluster}/topics/secret", headers=alice)).status_code == 403
    produced = await http.post(f"{cluster}/topics/orders/records", headers=alice, json={"value": {
        "type": "STRING", "data": "hello"}})
    assert produced.status_code == 200, produced.text
    refused = await http.post(f"{cluster}/topics/secret/records", headers=alice, json={"value": {
        "type": "STRING", "data": "hello"}})
    assert refused.status_code == 403 and refused.json()["error_code"] == 40301
    assert (await http.put(f"{cluster}/topics/orders/configs/retention.ms", headers=alice,
                           json={"value": "1000"})).status_code == 403  # no ALTER_CONFIGS
    assert (await http.post(f"{cluster}/topics", headers=alice, json={"topic_name": "new"})).status_code == 403
    assert (await http.delete(f"{cluster}/topics/orders", headers=alice)).status_code == 403
    assert (await http.get(f"{cluster}/brokers", headers=alice)).status_code == 403  # DESCRIBE on the cluster


async def test_rest_principals_from_scram_passwords_and_jwts(rest):
    http, cluster, issuer = rest
    assert (await http.get(f"{cluster}/topics")).status_code == 401
    assert (await http.get(f"{cluster}/topics", headers=basic("alice", "wrong"))).status_code == 401
    assert (await http.get(f"{cluster}/topics", headers=basic("nobody", "alice-secret"))).status_code == 401
    bearer = {"Authorization": f"Bearer {issuer.token('alice')}"}
    listed = await http.get(f"{cluster}/topics", headers=bearer)
    assert [t["topic_name"] for t in listed.json()["data"]] == ["orders"]
    expired = {"Authorization": f"Bearer {issuer.token('alice', lifetime_s=-120)}"}
    assert (await http.get(f"{cluster}/topics", headers=expired)).status_code == 401


async def test_no_login_module_is_accepted_over_rest(rest):
    """The CVE-2023-25194 class: sasl.jaas.config (and the mechanisms) are read at start-up only."""
    http, cluster, _ = rest
    for name in ("sasl.jaas.config", "sasl.enabled.mechanisms"):
        response = await http.put(f"{cluster}/broker-configs/{name}", headers=basic("admin", "admin-secret"), json={
            "value": "com.sun.security.auth.module.JndiLoginModule required user.provider.url=\"ldap://x\";"})
        assert response.status_code == 400 and "dynamically" in response.json()["message"], response.text


async def test_an_https_admin_listener_takes_the_principal_of_the_client_certificate(tmp_path):
    ca = CertificateAuthority(tmp_path / "ca")
    server = ca.issue("server", server=True, CN="broker")
    alice = ca.issue("alice", O="Acme", CN="Alice")
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data", **{
            "ssl.keystore.location": str(server.both), "ssl.truststore.location": str(ca.cert_path),
            "ssl.client.auth": "required", "ssl.principal.mapping.rules": "RULE:^CN=([^,]+),.*$/$1/L,DEFAULT",
            "admin.listeners": "https://0.0.0.0:0",  # not loopback: allowed, every caller has a certificate
            "authorizer.class.name": AUTHORIZER_CLASS_NAMES[0], "super.users": "User:ANONYMOUS"})
        broker = running.broker
        await broker.propose([AclRecord(uuid.uuid4(), 2, "orders", 3, "User:alice", "*", 8, 3)])  # DESCRIBE
        for name in ("orders", "secret"):
            await broker.create_topic(TopicSpec(name))
        address = (await nursery.start(serve_admin, broker)).split(",")[0]
        url = "https://127.0.0.1:" + address.rsplit(":", 1)[1]
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        context.load_cert_chain(str(alice.cert), str(alice.key))
        async with httpx.AsyncClient(base_url=url, verify=context) as http:
            listed = await http.get(f"/v3/clusters/{broker.cluster_id}/topics")
            assert listed.status_code == 200, listed.text
            assert [t["topic_name"] for t in listed.json()["data"]] == ["orders"]  # as User:alice
            assert (await http.get(f"/v3/clusters/{broker.cluster_id}/brokers")).status_code == 403
        async with httpx.AsyncClient(base_url=url, verify=ssl.create_default_context(cafile=str(ca.cert_path))) as http:
            with pytest.raises(httpx.HTTPError):  # no certificate: refused in the handshake
                await http.get(f"/v3/clusters/{broker.cluster_id}/topics")
        nursery.cancel_scope.cancel()
    running.broker.close()
