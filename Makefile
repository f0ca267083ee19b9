VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test bench clean kafka-java go-clients

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

## Start one broker on the embedded default (data in ./data, PLAINTEXT://127.0.0.1:9092)
serve: $(STAMP)
	$(VENV)/bin/lodestream serve $(ARGS)

## Apache Kafka's tools and Java client from Maven Central (cached in ~/.m2), for compat-tests
kafka-java:
	compat-tests/java/fetch-kafka.sh

## The Go client checks (franz-go, sarama) from the Go module proxy (cached in ~/go/pkg/mod), for compat-tests
go-clients:
	compat-tests/go/build.sh

# Compat tests run a second time against three replicated brokers (compat-tests/README.md); the whole
# compat suite that way by hand: LODESTREAM_COMPAT_BROKER=cluster $(PY) -m pytest -q compat-tests
CLUSTER_COMPAT ?= compat-tests/test_confluent_kafka.py compat-tests/test_exactly_once.py compat-tests/test_java_client.py

## Run the whole suite: unit, in-process integration, compat tests against real clients (one broker, then some
## of them against a three-broker cluster)
test: $(STAMP) kafka-java go-clients
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 $(PYTEST_ARGS)
	LODESTREAM_COMPAT_BROKER=cluster $(PY) -m pytest -q -p no:cacheprovider $(CLUSTER_COMPAT)

bench: $(STAMP)
	$(PY) bench/produce_consume.py $(ARGS)

clean:
	rm -rf $(VENV) data compat-tests/java/target compat-tests/go/bin
