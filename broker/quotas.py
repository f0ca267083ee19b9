"""Client quotas: token buckets, Kafka's precedence rules, KIP-219 throttling.

A quota is a rate (bytes/s, requests/s for commit_request_rate, or for
request_percentage a share of one request thread's time: 100 = one second of
handler time per second, Kafka's unit). Each quota'd identity gets a TokenBucket holding at most ``rate * BURST_SECONDS``
tokens. A request is never refused or shrunk for being over quota: its bytes
are taken from the bucket even if that leaves a debt, and the response says
``throttle_time_ms`` = the time the bucket needs to be out of debt (capped at
MAX_THROTTLE_SECONDS; any remaining debt throttles the next request). The
connection then stops reading for that long (broker/server.py), so clients
that ignore the field are held to the rate as well.

request_percentage is charged with the time the broker's (one) trio thread
spent on the request: decoding it, running its handler (only while it runs, not
while it waits for a write or a long poll: BusyTime), and encoding the answer.
Every API is charged, as in Kafka; the response's throttle is the larger of the
byte-rate and the request-time throttles.

Entities and precedence are Kafka's (docs "Quotas"): the most specific match
of

    /users/u/clients/c > /users/u/clients/<default> > /users/u >
    /users/<default>/clients/c > /users/<default>/clients/<default> >
    /users/<default> > /clients/c > /clients/<default>

wins, per quota key. Lodestream has no authentication yet: every client is the
principal ``ANONYMOUS``. As in Kafka, a bucket is shared by every client the
matched entity names exactly and is per-client where it matched a default:
/users/u is one bucket for all of u's clients, /clients/<default> is one
bucket per client id.

Beyond Kafka, entity type ``consumer-group`` (alone) carries
``consumer_byte_rate`` (the fetch bytes of all the group's members, one bucket)
and ``commit_request_rate`` (OffsetCommit requests/s of the group). A fetching
client belongs to the group it last joined (JoinGroup / ConsumerGroupHeartbeat)
with the same client id from the same host. A fetch is throttled by the larger
of its client quota and its group quota.

The same consumer-group quotas are also group configs (Kafka 4's config
resource type GROUP, 32): IncrementalAlterConfigs / DescribeConfigs on group
`g` with keys consumer.byte.rate and commit.request.rate read and write the
consumer-group=g quota entity (group_config_records / describe_group_configs);
the consumer-group=<default> entity is their cluster-wide default.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import trio

from lodestream.consensus.records import QuotaRecord

ANONYMOUS = "ANONYMOUS"

USER = "user"
CLIENT_ID = "client-id"
IP = "ip"
CONSUMER_GROUP = "consumer-group"

PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
COMMIT_REQUEST_RATE = "commit_request_rate"

CLIENT_KEYS = (PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE)
GROUP_KEYS = (CONSUMER_BYTE_RATE, COMMIT_REQUEST_RATE)

BURST_SECONDS = 1.0  # a bucket holds one second of its rate
MAX_THROTTLE_SECONDS = 11.0  # Kafka: quota.window.size.seconds (1) * quota.window.num (11)

Entity = tuple[tuple[str, "str | None"], ...]  # sorted by entity type; None = the type's default


def make_entity(pairs) -> Entity:
    return tuple(sorted((str(t), n) for t, n in pairs))


class QuotaError(ValueError):
    """An invalid entity or quota key/value (AlterClientQuotas answers INVALID_REQUEST)."""


def validate(entity: Entity, key: str, value: float | None) -> None:
    types = [t for t, _ in entity]
    if not types or len(set(types)) != len(types):
        raise QuotaError(f"invalid quota entity {entity!r}")
    if CONSUMER_GROUP in types:
        if len(types) != 1:
            raise QuotaError("a consumer-group quota entity cannot be combined with other entity types")
        if key not in GROUP_KEYS:
            raise QuotaError(f"unknown quota key {key!r} for a consumer-group (use {', '.join(GROUP_KEYS)})")
    elif set(types) <= {USER, CLIENT_ID}:
        if key not in CLIENT_KEYS:
            raise QuotaError(f"unknown quota key {key!r} (use {', '.join(CLIENT_KEYS)})")
    elif IP in types:
        raise QuotaError("ip quotas (connection creation rate) are not supported")
    else:
        raise QuotaError(f"unknown quota entity type in {types!r}")
    if value is not None and not value > 0:
        raise QuotaError(f"quota value {key}={value} must be positive")


class TokenBucket:
    """tokens refill at `rate`/s up to `burst`; taking more than there is leaves a debt."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else self.rate * BURST_SECONDS
        self.tokens = self.burst
        self.last = now

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = float(rate)
        self.burst = self.rate * BURST_SECONDS
        self.tokens = min(self.tokens, self.burst)

    def record(self, amount: float, now: float) -> float:
        """Take `amount` tokens; return the throttle (seconds until out of debt, capped)."""
        self._refill(now)
        self.tokens -= amount
        return self.throttle(now)

    def throttle(self, now: float) -> float:
        self._refill(now)
        if self.tokens >= 0:
            return 0.0
        return min(-self.tokens / self.rate, MAX_THROTTLE_SECONDS)

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


def precedence(user: str, client_id: str) -> list[Entity]:
    """The entities that may hold a client's quota, most specific first (Kafka's order)."""
    return [
        ((CLIENT_ID, client_id), (USER, user)),
        ((CLIENT_ID, None), (USER, user)),
        ((USER, user),),
        ((CLIENT_ID, client_id), (USER, None)),
        ((CLIENT_ID, None), (USER, None)),
        ((USER, None),),
        ((CLIENT_ID, client_id),),
        ((CLIENT_ID, None),),
    ]


def resolve(quotas: Mapping[Entity, Mapping[str, float]], user: str, client_id: str, key: str
            ) -> tuple[Entity, float] | None:
    """(matched entity, value) of the quota `key` for this client, or None when unlimited."""
    for entity in precedence(user, client_id):
        values = quotas.get(entity)
        if values is not None and key in values:
            return entity, values[key]
    return None


@dataclass(frozen=True, slots=True)
class Usage:
    """What a request used, for QuotaManager.record."""

    client_id: str
    host: str = ""
    user: str = ANONYMOUS


class QuotaManager:
    def __init__(self, quotas: Callable[[], Mapping[Entity, Mapping[str, float]]],
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._quotas = quotas
        self._clock = clock
        self._buckets: dict[tuple, TokenBucket] = {}
        self._groups: dict[tuple[str, str], str] = {}  # (host, client id) -> consumer group id
        self._request_time_checked_for: object = None
        self._request_time_quotas = False

    # -- group membership -----------------------------------------------------
    def note_group_member(self, host: str, client_id: str, group_id: str) -> None:
        if len(self._groups) > 100_000:
            self._groups.clear()
        self._groups[(host, client_id)] = group_id

    def group_of(self, host: str, client_id: str) -> str | None:
        return self._groups.get((host, client_id))

    # -- accounting ---------------------------------------------------------------
    def _bucket(self, key: tuple, rate: float, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._buckets = {k: b for k, b in self._buckets.items() if not b.full(now)}
            bucket = self._buckets[key] = TokenBucket(rate, now)
        elif bucket.rate != rate:
            bucket.set_rate(rate, now)
        return bucket

    def _client_record(self, key: str, user: str, client_id: str, amount: float, now: float,
                       unit: float = 1.0) -> float:
        found = resolve(self._quotas(), user, client_id, key)
        if found is None:
            return 0.0
        entity, value = found
        rate = value * unit
        actual = {USER: user, CLIENT_ID: client_id}
        bucket_key = (key, tuple((t, actual[t]) for t, _ in entity))
        return self._bucket(bucket_key, rate, now).record(amount, now)

    def _group_record(self, key: str, group_id: str | None, amount: float, now: float) -> float:
        if group_id is None:
            return 0.0
        values = self._quotas().get(((CONSUMER_GROUP, group_id),))
        if values is None or key not in values:
            values = self._quotas().get(((CONSUMER_GROUP, None),))  # the default group quota, per group
            if values is None or key not in values:
                return 0.0
        return self._bucket((key, ((CONSUMER_GROUP, group_id),)), values[key], now).record(amount, now)

    def record_produce(self, usage: Usage, nbytes: int) -> int:
        """Charge produced bytes; return the throttle in ms."""
        now = self._clock()
        return _ms(self._client_record(PRODUCER_BYTE_RATE, usage.user, usage.client_id, nbytes, now))

    def record_fetch(self, usage: Usage, nbytes: int) -> int:
        now = self._clock()
        client = self._client_record(CONSUMER_BYTE_RATE, usage.user, usage.client_id, nbytes, now)
        group = self._group_record(CONSUMER_BYTE_RATE, self.group_of(usage.host, usage.client_id), nbytes, now)
        return _ms(max(client, group))

    def record_namespaces(self, key: str, charges: Mapping[str, tuple[float, int]]) -> int:
        """Charge bytes to namespaces' quotas ({namespace: (bytes/s, bytes)}, broker/namespaces.py); the longest
        throttle in ms."""
        now = self._clock()
        return _ms(max((self._bucket((key, (("namespace", name),)), rate, now).record(amount, now)
                        for name, (rate, amount) in charges.items()), default=0.0))

    def request_time_quotas(self) -> bool:
        """Whether any entity has a request_percentage quota (else handler time is not even measured)."""
        quotas = self._quotas()
        if quotas is not self._request_time_checked_for:
            self._request_time_checked_for = quotas
            self._request_time_quotas = any(REQUEST_PERCENTAGE in values for values in quotas.values())
        return self._request_time_quotas

    def record_request_time(self, usage: Usage, seconds: float) -> int:
        """Charge `seconds` of request-thread time to the client's request_percentage quota; the throttle in ms."""
        now = self._clock()
        return _ms(self._client_record(REQUEST_PERCENTAGE, usage.user, usage.client_id, seconds, now, unit=0.01))

    def record_commit(self, group_id: str) -> int:
        return _ms(self._group_record(COMMIT_REQUEST_RATE, group_id, 1, self._clock()))

    # -- DescribeClientQuotas -------------------------------------------------------
    def describe(self, components: list[tuple[str, int, str | None]], strict: bool
                 ) -> list[tuple[Entity, Mapping[str, float]]]:
        """components: (entity type, match type 0=exact/1=default/2=any, match)."""
        wanted = {t for t, _, _ in components}
        out = []
        for entity, values in self._quotas().items():
            if not values:
                continue
            names = dict(entity)
            if strict and set(names) != wanted:
                continue
            ok = True
            for entity_type, match_type, match in components:
                if entity_type not in names:
                    ok = False
                elif match_type == 0 and names[entity_type] != match:
                    ok = False
                elif match_type == 1 and names[entity_type] is not None:
                    ok = False
                elif match_type == 2 and names[entity_type] is None:
                    ok = False
            if ok:
                out.append((entity, values))
        return out


# -- consumer-group quotas as group configs (resource type GROUP) ---------------------------------------

GROUP_RESOURCE_TYPE = 32  # Kafka's ConfigResource.Type.GROUP
GROUP_CONFIG_KEYS = {"consumer.byte.rate": CONSUMER_BYTE_RATE, "commit.request.rate": COMMIT_REQUEST_RATE}
GROUP_CONFIG_DOCS = {
    "consumer.byte.rate": "Fetch bytes/s shared by all members of the group (quota consumer_byte_rate "
                          "of entity consumer-group). Unset: unlimited.",
    "commit.request.rate": "OffsetCommit requests/s of the whole group (quota commit_request_rate of "
                           "entity consumer-group). Unset: unlimited.",
}


def group_config_records(group_id: str, changes: Mapping[str, str | None]) -> list[QuotaRecord]:
    """QuotaRecords for group config changes (None = delete); QuotaError names a bad key or value."""
    if not group_id:
        raise QuotaError("group id must not be empty")
    records = []
    for key, text in changes.items():
        quota_key = GROUP_CONFIG_KEYS.get(key)
        if quota_key is None:
            raise QuotaError(f"Unknown group config name: {key} (supported: {', '.join(GROUP_CONFIG_KEYS)})")
        value = None
        if text is not None:
            try:
                value = float(text)
            except ValueError:
                raise QuotaError(f"Invalid value {text} for configuration {key}: not a number") from None
        try:
            validate(((CONSUMER_GROUP, group_id),), quota_key, value)
        except QuotaError as exc:
            raise QuotaError(f"Invalid value {text} for configuration {key}: {exc}") from None
        records.append(QuotaRecord(((CONSUMER_GROUP, group_id),), quota_key, value))
    return records


def describe_group_configs(quotas: Mapping[Entity, Mapping[str, float]], group_id: str
                           ) -> list[tuple[str, str | None, str, list[tuple[str, str, str]]]]:
    """(key, value, source, synonyms) per group config: the group's own value (GROUP_CONFIG), else the
    consumer-group=<default> entity's (DYNAMIC_DEFAULT_BROKER_CONFIG), else unset (DEFAULT_CONFIG)."""
    own = quotas.get(((CONSUMER_GROUP, group_id),), {})
    default = quotas.get(((CONSUMER_GROUP, None),), {})
    out = []
    for key, quota_key in GROUP_CONFIG_KEYS.items():
        synonyms = []
        if quota_key in own:
            synonyms.append((key, _number(own[quota_key]), "GROUP_CONFIG"))
        if quota_key in default:
            synonyms.append((key, _number(default[quota_key]), "DYNAMIC_DEFAULT_BROKER_CONFIG"))
        value, source = (synonyms[0][1], synonyms[0][2]) if synonyms else (None, "DEFAULT_CONFIG")
        out.append((key, value, source, synonyms))
    return out


def groups_with_configs(quotas: Mapping[Entity, Mapping[str, float]]) -> list[str]:
    """The group ids that have a group config of their own (ListConfigResources, type GROUP)."""
    return sorted(entity[0][1] for entity, values in quotas.items()
                  if len(entity) == 1 and entity[0][0] == CONSUMER_GROUP and entity[0][1] is not None
                  and any(key in values for key in GROUP_CONFIG_KEYS.values()))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _ms(seconds: float) -> int:
    return int(seconds * 1000 + 0.999) if seconds > 0 else 0


def apply_throttle(body, ctx):
    """The response with throttle_time set from ctx.throttle_ms (when the response has the field)."""
    if body is None or ctx is None or ctx.throttle_ms <= 0 or not hasattr(body, "throttle_time"):
        return body
    return dataclasses.replace(body, throttle_time=datetime.timedelta(milliseconds=ctx.throttle_ms))


class BusyTime:
    """Await a coroutine, adding to ``seconds`` only the time it runs, not the time it is suspended
    (waiting for a write, a long poll, a lock): the handler time a request_percentage quota charges.

    Drives the coroutine step by step, passing what it yields to trio and what trio sends (or
    throws, e.g. Cancelled) back into it, as ``await`` would.
    """

    __slots__ = ("coro", "seconds", "timer")

    def __init__(self, coro, timer: Callable[[], float] = time.perf_counter) -> None:
        self.coro = coro
        self.seconds = 0.0
        self.timer = timer

    def __await__(self):
        coro, timer = self.coro, self.timer
        value = error = None
        while True:
            started = timer()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                self.seconds += timer() - started
                return stop.value
            except BaseException:
                self.seconds += timer() - started
                raise
            self.seconds += timer() - started
            value = error = None
            try:
                value = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - forwarded into the coroutine, as await does
                error = exc
