"""Metadata records and the pure replay function (consensus/records.py, consensus/image.py)."""

from __future__ import annotations

import dataclasses
import uuid
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from lodestream.consensus.image import MetadataImage, replay, replay_all
from lodestream.consensus.records import (
    ConfigRecord,
    PartitionRecord,
    RemoveTopicRecord,
    TopicRecord,
    decode_records,
    encode_records,
)

NAMES = ["orders", "payments", "a.b", "x-y_z"]
CONFIG_KEYS = ["retention.ms", "cleanup.policy", "max.message.bytes"]
BROKER_SCOPES = ["", "1", "2"]

uuids = st.uuids()
names = st.sampled_from(NAMES)
text = st.text(max_size=12)
config_values = st.one_of(st.none(), text)

topic_records = st.builds(TopicRecord, name=text, topic_id=uuids)
partition_records = st.builds(
    PartitionRecord,
    topic_id=uuids,
    partition=st.integers(0, 2**31 - 1),
    replicas=st.lists(st.integers(0, 2**31 - 1), max_size=5).map(tuple),
    leader=st.integers(-1, 2**31 - 1),
    leader_epoch=st.integers(0, 2**31 - 1),
)
remove_records = st.builds(RemoveTopicRecord, topic_id=uuids)
config_records = st.builds(
    ConfigRecord, resource_type=st.sampled_from(["topic", "broker"]), resource_name=text, name=text, value=config_values
)
any_record = st.one_of(topic_records, partition_records, remove_records, config_records)


def snapshot(image: MetadataImage) -> dict:
    """A plain-dict copy of everything an image holds (to detect mutation)."""

    def topic(t):
        return {
            "name": t.name,
            "id": t.topic_id,
            "partitions": {k: (p.partition, p.replicas, p.leader, p.leader_epoch) for k, p in t.partitions.items()},
            "configs": dict(t.configs),
        }

    return {
        "by_name": {name: topic(t) for name, t in image.topics_by_name.items()},
        "by_id": {topic_id: topic(t) for topic_id, t in image.topics_by_id.items()},
        "brokers": {scope: dict(values) for scope, values in image.broker_configs.items()},
    }


# -- encoding ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(any_record, max_size=8))
def test_encode_decode_round_trip_of_every_record_type(records):
    encoded = encode_records(records)
    assert isinstance(encoded, bytes)
    decoded = decode_records(encoded)
    assert decoded == records
    assert [type(r) for r in decoded] == [type(r) for r in records]
    assert encode_records(decoded) == encoded  # stable encoding


def test_encoding_is_readable_json_with_type_tags():
    topic_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    encoded = encode_records([
        TopicRecord("t", topic_id),
        PartitionRecord(topic_id, 0, (1, 2), 1, 3),
        RemoveTopicRecord(topic_id),
        ConfigRecord("broker", "", "num.partitions", None),
    ])
    assert encoded == (
        b'[{"type":"topic","name":"t","topic_id":"12345678-1234-5678-1234-567812345678"},'
        b'{"type":"partition","topic_id":"12345678-1234-5678-1234-567812345678","partition":0,'
        b'"replicas":[1,2],"leader":1,"leader_epoch":3,"isr":null,"elr":[],"partition_epoch":0,"adding":[],"removing":[]},'
        b'{"type":"remove_topic","topic_id":"12345678-1234-5678-1234-567812345678"},'
        b'{"type":"config","resource_type":"broker","resource_name":"","name":"num.partitions","value":null}]'
    )


# -- replay ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(any_record, max_size=12), any_record)
def test_replay_never_mutates_the_image_it_is_given(history, record):
    image = replay_all(MetadataImage(), history)
    before = snapshot(image)
    try:
        replay(image, record)
    except ValueError:
        pass  # an unknown resource type is refused; still must not mutate
    assert snapshot(image) == before


@settings(max_examples=40, deadline=None)
@given(st.lists(any_record, max_size=12))
def test_replay_all_equals_replaying_one_by_one_and_the_decoded_journal(records):
    records = [r for r in records if not (isinstance(r, ConfigRecord) and r.resource_type not in ("topic", "broker"))]
    stepwise = MetadataImage()
    for record in records:
        stepwise = replay(stepwise, record)
    assert snapshot(replay_all(MetadataImage(), records)) == snapshot(stepwise)
    assert snapshot(replay_all(MetadataImage(), decode_records(encode_records(records)))) == snapshot(stepwise)


def test_create_delete_recreate():
    first, second = uuid.uuid4(), uuid.uuid4()
    image = replay_all(MetadataImage(), [
        TopicRecord("t", first),
        PartitionRecord(first, 0, (1,), 1, 0),
        PartitionRecord(first, 1, (1,), 1, 0),
        ConfigRecord("topic", "t", "retention.ms", "1000"),
    ])
    topic = image.topic("t")
    assert topic.topic_id == first and sorted(topic.partitions) == [0, 1]
    assert dict(topic.configs) == {"retention.ms": "1000"}
    assert image.topics_by_id[first] is topic

    deleted = replay(image, RemoveTopicRecord(first))
    assert deleted.topic("t") is None and first not in deleted.topics_by_id
    assert image.topic("t") is topic  # the old image still has it

    recreated = replay_all(deleted, [TopicRecord("t", second), PartitionRecord(second, 0, (1,), 1, 0)])
    topic = recreated.topic("t")
    assert topic.topic_id == second and sorted(topic.partitions) == [0]
    assert dict(topic.configs) == {}  # configs of the deleted topic do not come back
    assert set(recreated.topics_by_id) == {second}

    # Stale records about the deleted id are ignored.
    stale = replay_all(recreated, [PartitionRecord(first, 5, (1,), 1, 0), RemoveTopicRecord(first)])
    assert snapshot(stale) == snapshot(recreated)


def test_recreating_a_name_with_a_new_id_replaces_the_old_topic():
    old, new = uuid.uuid4(), uuid.uuid4()
    image = replay_all(MetadataImage(), [TopicRecord("t", old), PartitionRecord(old, 0, (1,), 1, 0)])
    image = replay(image, TopicRecord("t", new))
    assert image.topic("t").topic_id == new
    assert set(image.topics_by_id) == {new}
    assert dict(image.topic("t").partitions) == {}
    # A late removal of the old id must not take the new topic with it.
    assert replay(image, RemoveTopicRecord(old)).topic("t").topic_id == new


def test_partition_records_update_leader_and_epoch():
    topic_id = uuid.uuid4()
    image = replay_all(MetadataImage(), [
        TopicRecord("t", topic_id),
        PartitionRecord(topic_id, 0, (1, 2, 3), 1, 0),
        PartitionRecord(topic_id, 0, (1, 2, 3), 2, 1),
    ])
    partition = image.topic("t").partitions[0]
    assert (partition.replicas, partition.leader, partition.leader_epoch) == ((1, 2, 3), 2, 1)
    assert image.topics_by_id[topic_id].partitions[0] == partition


def test_topic_configs_set_and_delete():
    topic_id = uuid.uuid4()
    image = replay_all(MetadataImage(), [
        TopicRecord("t", topic_id),
        ConfigRecord("topic", "t", "retention.ms", "1"),
        ConfigRecord("topic", "t", "cleanup.policy", "compact"),
        ConfigRecord("topic", "t", "retention.ms", "2"),
        ConfigRecord("topic", "t", "cleanup.policy", None),
        ConfigRecord("topic", "t", "never.set", None),  # deleting an absent key is harmless
        ConfigRecord("topic", "missing", "retention.ms", "5"),  # unknown topic: ignored
    ])
    assert dict(image.topic("t").configs) == {"retention.ms": "2"}
    assert image.topics_by_id[topic_id].configs == image.topic("t").configs
    assert image.topic("missing") is None


def test_broker_configs_set_and_delete_per_scope():
    image = replay_all(MetadataImage(), [
        ConfigRecord("broker", "", "num.partitions", "3"),
        ConfigRecord("broker", "1", "num.partitions", "5"),
        ConfigRecord("broker", "1", "message.max.bytes", "100"),
        ConfigRecord("broker", "1", "num.partitions", None),
    ])
    assert dict(image.broker_configs[""]) == {"num.partitions": "3"}
    assert dict(image.broker_configs["1"]) == {"message.max.bytes": "100"}


def test_image_mappings_are_read_only():
    topic_id = uuid.uuid4()
    image = replay_all(MetadataImage(), [
        TopicRecord("t", topic_id), PartitionRecord(topic_id, 0, (1,), 1, 0),
        ConfigRecord("topic", "t", "retention.ms", "1"), ConfigRecord("broker", "", "num.partitions", "2")])
    for mapping in (image.topics_by_name, image.topics_by_id, image.broker_configs, image.broker_configs[""],
                    image.topic("t").partitions, image.topic("t").configs):
        assert isinstance(mapping, MappingProxyType)
        with pytest.raises(TypeError):
            mapping["x"] = None  # type: ignore[index]


def test_unknown_records_are_refused():
    with pytest.raises(ValueError):
        replay(MetadataImage(), ConfigRecord("group", "g", "k", "v"))
    with pytest.raises(ValueError):
        replay(MetadataImage(), "not a record")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        decode_records(b'[{"type":"no_such_record"}]')


# -- a state machine against a plain-dict model ------------------------------------------------


class ReplayMachine(RuleBasedStateMachine):
    """Random record sequences, checked against a dict model after every step."""

    topic_ids = Bundle("topic_ids")

    def __init__(self) -> None:
        super().__init__()
        self.image = MetadataImage()
        self.topics: dict[uuid.UUID, dict] = {}  # id -> {"name", "partitions", "configs"}
        self.brokers: dict[str, dict[str, str]] = {}
        self.journal: list = []
        self._counter = 0

    def _apply(self, record) -> None:
        before = snapshot(self.image)
        old = self.image
        self.image = replay(old, record)
        assert snapshot(old) == before, "replay mutated its input"
        self.journal.append(record)

    def _by_name(self, name: str):
        for topic_id, topic in self.topics.items():
            if topic["name"] == name:
                return topic_id
        return None

    @rule(target=topic_ids, name=names)
    def create_topic(self, name):
        self._counter += 1
        topic_id = uuid.UUID(int=self._counter)
        self._apply(TopicRecord(name, topic_id))
        previous = self._by_name(name)
        if previous is not None:
            del self.topics[previous]
        self.topics[topic_id] = {"name": name, "partitions": {}, "configs": {}}
        return topic_id

    @rule(topic_id=st.one_of(topic_ids, uuids), partition=st.integers(0, 3),
          replicas=st.lists(st.integers(0, 4), min_size=1, max_size=3, unique=True),
          epoch=st.integers(0, 5))
    def set_partition(self, topic_id, partition, replicas, epoch):
        self._apply(PartitionRecord(topic_id, partition, tuple(replicas), replicas[0], epoch))
        if topic_id in self.topics:
            self.topics[topic_id]["partitions"][partition] = (partition, tuple(replicas), replicas[0], epoch)

    @rule(topic_id=st.one_of(consumes(topic_ids), uuids))
    def remove_topic(self, topic_id):
        self._apply(RemoveTopicRecord(topic_id))
        self.topics.pop(topic_id, None)

    @rule(name=names, key=st.sampled_from(CONFIG_KEYS), value=st.one_of(st.none(), st.sampled_from(["1", "2", "x"])))
    def topic_config(self, name, key, value):
        self._apply(ConfigRecord("topic", name, key, value))
        topic_id = self._by_name(name)
        if topic_id is not None:
            configs = self.topics[topic_id]["configs"]
            if value is None:
                configs.pop(key, None)
            else:
                configs[key] = value

    @rule(scope=st.sampled_from(BROKER_SCOPES), key=st.sampled_from(CONFIG_KEYS),
          value=st.one_of(st.none(), st.sampled_from(["1", "2"])))
    def broker_config(self, scope, key, value):
        self._apply(ConfigRecord("broker", scope, key, value))
        if value is None:
            self.brokers.get(scope, {}).pop(key, None)
        else:
            self.brokers.setdefault(scope, {})[key] = value

    @invariant()
    def image_matches_model(self):
        image = self.image
        assert set(image.topics_by_id) == set(self.topics)
        assert set(image.topics_by_name) == {t["name"] for t in self.topics.values()}
        for topic_id, expected in self.topics.items():
            topic = image.topics_by_id[topic_id]
            assert image.topics_by_name[expected["name"]] is topic
            assert topic.name == expected["name"]
            assert {k: (p.partition, p.replicas, p.leader, p.leader_epoch) for k, p in topic.partitions.items()} == \
                expected["partitions"]
            assert dict(topic.configs) == expected["configs"]
        non_empty = {scope: dict(values) for scope, values in image.broker_configs.items() if values}
        assert non_empty == {scope: values for scope, values in self.brokers.items() if values}

    @invariant()
    def journal_round_trips(self):
        if len(self.journal) % 5 == 0:  # the whole journal through JSON rebuilds the same image
            rebuilt = replay_all(MetadataImage(), decode_records(encode_records(self.journal)))
            assert snapshot(rebuilt) == snapshot(self.image)


ReplayMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
TestReplayMachine = ReplayMachine.TestCase


# -- offloaded segments (docs/tiered-storage.md) ---------------------------------------------------------------


def test_remote_segment_states_follow_kip_405_and_the_image_lists_finished_ones():
    from lodestream.consensus.image_machine import image_from_snapshot, image_to_records, image_to_snapshot
    from lodestream.consensus.records import (
        COPY_FINISHED, COPY_STARTED, DELETE_FINISHED, DELETE_STARTED, RemoteSegmentRecord)

    topic_id = uuid.uuid4()
    image = replay_all(MetadataImage(), [TopicRecord("t", topic_id), PartitionRecord(topic_id, 0, (1, 2, 3), 1)])

    def segment(segment_id, state, base=0, end=100):
        return RemoteSegmentRecord(topic_id, 0, segment_id, state, base, end, 1_700_000_000_000, ((0, base),), 4096,
                                   4000, "rs:4+2", 1024, 340, tuple(f"file:///s{i}" for i in range(6)), 1)

    first, second, abandoned = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    image = replay_all(image, [segment(first, COPY_STARTED), segment(second, COPY_STARTED, 100, 250),
                               segment(abandoned, COPY_STARTED, 250, 300)])
    assert image.remote_log(topic_id, 0) == []  # nothing readable before COPY_FINISHED
    assert replay(image, segment(first, DELETE_FINISHED)) == image  # out of order: ignored
    image = replay_all(image, [segment(second, COPY_FINISHED, 100, 250), segment(first, COPY_FINISHED),
                               segment(abandoned, DELETE_STARTED, 250, 300)])
    assert [(s.base_offset, s.end_offset) for s in image.remote_log(topic_id, 0)] == [(0, 100), (100, 250)]
    assert replay(image, segment(first, COPY_STARTED)) == image  # no way back
    finished = segment(first, COPY_FINISHED)
    moved = dataclasses.replace(finished, stores=("file:///spare",) + finished.stores[1:])
    image = replay(image, moved)  # a repair moved fragment 0
    assert image.remote_log(topic_id, 0)[0].stores[0] == "file:///spare"
    assert decode_records(encode_records([moved])) == [moved]
    assert image_from_snapshot(image_to_snapshot(image)) == image
    assert replay_all(MetadataImage(), image_to_records(image)) == image
    image = replay_all(image, [segment(first, DELETE_STARTED), segment(first, DELETE_FINISHED),
                               segment(abandoned, DELETE_FINISHED, 250, 300)])
    assert [s.segment_id for s in image.remote_log(topic_id, 0)] == [second]
    assert set(image.remote_segments[(topic_id, 0)]) == {second}
    image = replay(image, RemoveTopicRecord(topic_id))
    assert image.remote_segments == {}
    assert replay(image, segment(uuid.uuid4(), COPY_STARTED)) == image  # about a deleted topic: ignored


def test_scram_credentials_acls_and_namespaces_replay_and_survive_snapshots():
    import uuid as uuid_module

    from lodestream.consensus.image_machine import image_from_snapshot, image_to_records, image_to_snapshot
    from lodestream.consensus.records import (
        AclRecord, NamespaceRecord, RemoveAclRecord, RemoveNamespaceRecord, RemoveScramCredentialRecord,
        ScramCredentialRecord)

    alice = ScramCredentialRecord("alice", "SCRAM-SHA-512", "c2FsdA==", "c3RvcmVk", "c2VydmVy", 8192)
    kept, dropped = uuid_module.uuid4(), uuid_module.uuid4()
    image = replay_all(MetadataImage(), decode_records(encode_records([
        alice, ScramCredentialRecord("bob", "SCRAM-SHA-256", "cw==", "cw==", "cw==", 4096),
        RemoveScramCredentialRecord("bob", "SCRAM-SHA-256"),
        AclRecord(kept, 2, "orders", 3, "User:alice", "*", 3, 3), AclRecord(dropped, 2, "x", 4, "User:*", "*", 4, 2),
        RemoveAclRecord(dropped), NamespaceRecord("payments", (("num.partitions", "3"),)),
        NamespaceRecord("tmp"), RemoveNamespaceRecord("tmp")])))
    assert list(image.namespaces) == ["payments"] and image.namespaces["payments"].defaults == (("num.partitions", "3"),)
    assert dict(image.scram_credentials) == {("alice", "SCRAM-SHA-512"): alice}
    assert list(image.acls) == [kept] and image.acls[kept].resource_name == "orders"
    assert image_from_snapshot(image_to_snapshot(image)) == image
    assert replay_all(MetadataImage(), image_to_records(image)) == image
