"""Apache Kafka's command-line tools, run as Kafka's bin/*.sh scripts run them: `java -cp <jars> <main class>`.

The jars come from Maven Central through compat-tests/java/pom.xml (Kafka 4.1.1, pinned there, and the
newer NEWER_VERSION), resolved into Maven's local repository by compat-tests/java/fetch-kafka.sh, which
`make test` runs first and which leaves the classpaths in compat-tests/java/target/. Nothing downloaded
is in the source tree.
"""

from __future__ import annotations

import functools
import os
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

JAVA_DIR = Path(__file__).resolve().parent / "java"
TEST_CLASSES = JAVA_DIR / "target" / "classes"
PINNED_VERSION = "4.1.1"  # pom.xml's kafka.version: also the Java test programs' client
NEWER_VERSION = "4.4.0"  # keep in step with fetch-kafka.sh
VERSIONS = (PINNED_VERSION, NEWER_VERSION)

# The main class behind each of Kafka 4.1's bin/ scripts used here; where a later 4.x moved one, its new
# home goes first (the first found in the version's jars is used).
MAIN_CLASSES = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-configs": ("org.apache.kafka.tools.ConfigCommand", "kafka.admin.ConfigCommand"),
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
    "kafka-metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
}

# Short-lived JVMs on a 2-core machine: the client compiler only and the serial collector start fastest.
JVM_OPTIONS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss1m", "-Xmx512m", "-Djava.awt.headless=true"]


class ToolError(AssertionError):
    pass


def classpath_file(version: str) -> Path:
    return JAVA_DIR / "target" / ("classpath.txt" if version == PINNED_VERSION else f"classpath-{version}.txt")


@dataclass(frozen=True)
class KafkaTools:
    version: str
    classpath: str
    main_classes: dict[str, str]

    @classmethod
    @functools.cache  # reading the jars' listings once per version is enough
    def load(cls, version: str = PINNED_VERSION) -> "KafkaTools":
        path = classpath_file(version)
        if not path.exists():
            raise ToolError(f"{path} is missing: run compat-tests/java/fetch-kafka.sh (make test does)")
        jars = path.read_text().strip()
        classpath = f"{TEST_CLASSES}{os.pathsep}{jars}" if version == PINNED_VERSION else jars
        present = set()
        for jar in jars.split(os.pathsep):
            if "kafka" in Path(jar).name:
                with zipfile.ZipFile(jar) as archive:
                    present.update(archive.namelist())
        main_classes = {}
        for tool, candidates in MAIN_CLASSES.items():
            candidates = (candidates,) if isinstance(candidates, str) else candidates
            main_classes[tool] = next((c for c in candidates if c.replace(".", "/") + ".class" in present),
                                      candidates[-1])
        return cls(version, classpath, main_classes)

    def command(self, tool: str, *args: str, jvm_options: list[str] = JVM_OPTIONS) -> list[str]:
        main_class = self.main_classes.get(tool, tool)  # a tool's name, or a main class (the Java test programs)
        return ["java", *jvm_options, "-cp", self.classpath, main_class, *args]

    def run(self, tool: str, *args: str, input: str | None = None, timeout: float = 120,
            check: bool = True, jvm_options: list[str] = JVM_OPTIONS) -> subprocess.CompletedProcess:
        """Run a tool to completion; with `check`, a non-zero exit fails with its output."""
        done = subprocess.run(self.command(tool, *args, jvm_options=jvm_options), input=input,
                              capture_output=True, text=True,
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise ToolError(f"{tool} {' '.join(args)} exited with {done.returncode}\n"
                            f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}")
        return done

    def start(self, tool: str, *args: str, jvm_options: list[str] = JVM_OPTIONS, **popen) -> subprocess.Popen:
        """Start a long-running tool (verifiable clients, benchmarks' load); the caller stops it."""
        return subprocess.Popen(self.command(tool, *args, jvm_options=jvm_options), text=True, **popen)


def perf_test_figures(stdout: str) -> dict[str, str]:
    """kafka-consumer-perf-test's summary: its last two lines, a CSV header and its values, as a dict."""
    header, values = stdout.strip().splitlines()[-2:]
    return dict(zip((name.strip() for name in header.split(",")), (value.strip() for value in values.split(","))))
