#!/usr/bin/env bash
# Resolves Apache Kafka's tools and Java client (pinned in pom.xml, and a newer 4.x for the tools) from
# Maven Central into Maven's local repository (~/.m2, outside the source tree), compiles the Java test
# programs of this folder, and writes the runtime classpaths to target/ for compat-tests/kafka_tools.py.
# Idempotent: with everything cached it only checks, in a few seconds. Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
    echo "fetch-kafka.sh: java and mvn are needed (Debian: apt-get install openjdk-17-jdk-headless maven)" >&2
    exit 1
fi
mvn -B -q compile dependency:build-classpath -Dmdep.outputFile=target/classpath.txt -Dmdep.includeScope=runtime
# A newer Kafka 4.x too, for the tools only (compat-tests/kafka_tools.py NEWER_VERSION: keep in step).
mvn -B -q dependency:build-classpath -Dkafka.version=4.4.0 -Dmdep.outputFile=target/classpath-4.4.0.txt \
    -Dmdep.includeScope=runtime
