"""kafka-python and aiokafka round trips for the security tests: produce `count` values to a topic, read them
back from the start, with the security settings both libraries name alike (security_protocol, ssl_context,
sasl_mechanism, sasl_plain_username, sasl_plain_password)."""

from __future__ import annotations

import asyncio

DEADLINE_S = 30


def kafka_python_round_trip(bootstrap: str, topic: str, security: dict, count: int = 3) -> list[bytes]:
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, **security)
    for index in range(count):
        producer.send(topic, b"kp-%d" % index)
    producer.flush(DEADLINE_S)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=DEADLINE_S * 1000, **security)
    values = []
    for message in consumer:  # the values, then stop (consumer_timeout_ms bounds a shortfall)
        values.append(message.value)
        if len(values) == count:
            break
    consumer.close()
    return values


def aiokafka_round_trip(bootstrap: str, topic: str, security: dict, count: int = 3) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def run() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **security)
        await producer.start()
        try:
            for index in range(count):
                await producer.send_and_wait(topic, b"aio-%d" % index)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **security)
        await consumer.start()
        try:
            return [(await asyncio.wait_for(consumer.getone(), DEADLINE_S)).value for _ in range(count)]
        finally:
            await consumer.stop()

    return asyncio.run(run())
