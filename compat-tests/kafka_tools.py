"""Apache Kafka's command-line tools, run as Kafka's bin/*.sh scripts run them: `java -cp <jars> <main class>`.

The jars come from Maven Central through compat-tests/java/pom.xml (Kafka 4.1.1, pinned there), resolved
into Maven's local repository by compat-tests/java/fetch-kafka.sh, which `make test` runs first and which
leaves the classpath in compat-tests/java/target/classpath.txt. Nothing downloaded is in the source tree.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

JAVA_DIR = Path(__file__).resolve().parent / "java"
CLASSPATH_FILE = JAVA_DIR / "target" / "classpath.txt"
TEST_CLASSES = JAVA_DIR / "target" / "classes"

# The main class behind each of Kafka 4.1's bin/ scripts used here.
MAIN_CLASSES = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-configs": "kafka.admin.ConfigCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-delete-records": "org.apache.kafka.tools.DeleteRecordsCommand",
    "kafka-log-dirs": "org.apache.kafka.tools.LogDirsCommand",
    "kafka-transactions": "org.apache.kafka.tools.TransactionsCommand",
    "kafka-features": "org.apache.kafka.tools.FeatureCommand",
    "kafka-broker-api-versions": "org.apache.kafka.tools.BrokerApiVersionsCommand",
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "kafka-consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "kafka-verifiable-producer": "org.apache.kafka.tools.VerifiableProducer",
    "kafka-verifiable-consumer": "org.apache.kafka.tools.VerifiableConsumer",
}

# Short-lived JVMs on a 2-core machine: the client compiler only and the serial collector start fastest.
JVM_OPTIONS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss1m", "-Xmx512m", "-Djava.awt.headless=true"]


class ToolError(AssertionError):
    pass


@dataclass(frozen=True)
class KafkaTools:
    classpath: str

    @classmethod
    def load(cls) -> "KafkaTools":
        if not CLASSPATH_FILE.exists():
            raise ToolError(f"{CLASSPATH_FILE} is missing: run compat-tests/java/fetch-kafka.sh (make test does)")
        return cls(f"{TEST_CLASSES}{os.pathsep}{CLASSPATH_FILE.read_text().strip()}")

    def command(self, tool: str, *args: str) -> list[str]:
        main_class = MAIN_CLASSES.get(tool, tool)  # a tool's name, or a main class (the Java test programs)
        return ["java", *JVM_OPTIONS, "-cp", self.classpath, main_class, *args]

    def run(self, tool: str, *args: str, input: str | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a tool to completion; with `check`, a non-zero exit fails with its output."""
        done = subprocess.run(self.command(tool, *args), input=input, capture_output=True, text=True,
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise ToolError(f"{tool} {' '.join(args)} exited with {done.returncode}\n"
                            f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}")
        return done

    def start(self, tool: str, *args: str, **popen) -> subprocess.Popen:
        """Start a long-running tool (verifiable clients); the caller stops it."""
        return subprocess.Popen(self.command(tool, *args), text=True, **popen)
