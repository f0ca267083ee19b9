#!/usr/bin/env bash
# Resolves Apache Kafka's tools and Java client (pinned in pom.xml) from Maven Central into Maven's
# local repository (~/.m2, outside the source tree), compiles the Java test programs of this folder,
# and writes the runtime classpath to target/classpath.txt for compat-tests/kafka_tools.py.
# Idempotent: with everything cached it only checks, in a few seconds. Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
    echo "fetch-kafka.sh: java and mvn are needed (Debian: apt-get install openjdk-17-jdk-headless maven)" >&2
    exit 1
fi
mvn -B -q compile dependency:build-classpath -Dmdep.outputFile=target/classpath.txt -Dmdep.includeScope=runtime
