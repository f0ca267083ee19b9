"""The configuration reference of docs/configuration.md, generated from the broker's config table.

    .venv/bin/python -m lodestream.broker.config_reference          # rewrite the generated part of the doc
    .venv/bin/python -m lodestream.broker.config_reference --check  # exit 1 if the doc is out of date
    .venv/bin/python -m lodestream.broker.config_reference --print  # the generated part on stdout

The generated part sits between BEGIN and END markers in docs/configuration.md; the prose around it is
kept. What it lists comes from broker/config.py (BROKER_CONFIGS, TOPIC_CONFIGS: Lodestream's entries merged
with every Kafka name of broker/kafka_configs.json): every honoured key with its type, default, valid
values, update mode and Kafka equivalence, then every key accepted with no effect, grouped by the reason.
tests/test_config_reference.py fails when the doc is not what this module generates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from lodestream.broker import config as table

BEGIN = "<!-- BEGIN GENERATED: config reference (python -m lodestream.broker.config_reference) -->"
END = "<!-- END GENERATED: config reference -->"
COMMAND = ".venv/bin/python -m lodestream.broker.config_reference"
DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# Valid values of a parser from broker/config.py, by the parser's qualified name. A new parser with no entry
# here stops generation (and so the doc test): say what it accepts.
_PLAIN_VALUES: dict[str, str] = {
    "_bool": "`true`, `false`",
    "_int": "an integer",
    "_str": "a string",
    "_cleanup_policy": "`delete`, `compact`, `delete,compact`",
    "_positive_float": "a number > 0",
    "_ratio": "0 to 1",
    "_super_users": "`User:name;User:name`",
    "_sasl_mechanisms": "`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER` (comma-separated)",
    "_http_listeners": "`http://host:port` or `https://host:port`, comma-separated; empty",
    "_basic_users": "`user:password,...`",
    "_pool_bytes": "`-1` (unbounded) or > 0",
    "_ip_overrides": "`ip:count,...`",
    "_erasure_code": "`rs:K+M`",
    "_store_urls": "`file:///path` or `s3://bucket?endpoint=http://host:port`, comma-separated, distinct",
    "_local_retention": "`-2` (as retention), `-1` (unlimited), or >= 0",
    "<lambda>": "a number",
}


def valid_values(parse: Callable[[str], object]) -> str:
    """What a config's parser accepts, in words."""
    name = parse.__qualname__
    if name.startswith(("_at_least.", "_one_of.")):
        cells = dict(zip(parse.__code__.co_freevars, (c.cell_contents for c in parse.__closure__ or ())))
        if "minimum" in cells:
            return f">= {cells['minimum']}"
        return ", ".join(f"`{choice}`" for choice in cells["choices"])
    if name == "_authorizer_class":
        from lodestream.broker.authorizer import AUTHORIZER_CLASS_NAMES
        return "empty (no authorizer), " + ", ".join(f"`{n}`" for n in AUTHORIZER_CLASS_NAMES)
    if name in _PLAIN_VALUES:
        return _PLAIN_VALUES[name]
    raise LookupError(f"broker/config_reference.py: say what parser {name} accepts (_PLAIN_VALUES)")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(value: str | None, sensitive: bool = False) -> str:
    if value is None:
        return "unset"
    if sensitive:
        return "(hidden)"
    if value == "":
        return "empty"
    return f"`{value}`"


def _kafka_catalog() -> tuple[str, dict[str, dict], dict[str, dict]]:
    catalog = table._load_kafka_catalog()
    broker = {e["name"]: e for e in catalog["broker"]}
    broker.update({e["name"]: dict(e, dynamic="cluster-wide") for e in catalog["broker_dynamic_only"]})
    return catalog["kafka_version"], broker, {e["name"]: e for e in catalog["topic"]}


def update_mode(definition: table.ConfigDef) -> str:
    if definition.read_only:
        return "read-only"
    return "per-broker" if definition.per_broker_only else "cluster-wide"


def _kafka_column(name: str, default: str | None, kafka: dict[str, dict], mode: str | None = None) -> str:
    entry = kafka.get(name)
    if entry is None:
        return "Lodestream's own"
    notes = []
    if entry["default"] != default:
        notes.append(f"Kafka's default: {_code(entry['default'])}")
    if mode is not None and entry["dynamic"] != mode:
        notes.append(f"Kafka: {entry['dynamic']}")
    return "honoured" + (f" ({'; '.join(notes)})" if notes else "")


def generate() -> str:
    """The generated part, markers included."""
    kafka_version, kafka_broker, kafka_topic = _kafka_catalog()
    broker_honoured = sorted((d for d in table.BROKER_CONFIGS.values() if not d.no_effect), key=lambda d: d.name)
    topic_honoured = sorted((d for d in table.TOPIC_CONFIGS.values() if not d.no_effect), key=lambda d: d.name)
    lines = [
        BEGIN,
        "",
        "## Reference (generated)",
        "",
        f"Generated from `broker/config.py` and `broker/kafka_configs.json` (Apache Kafka {kafka_version}) by "
        f"`{COMMAND}`; do not edit between the markers (the test suite checks that this part is up to date).",
        "",
        "**Update mode** is how AlterConfigs, IncrementalAlterConfigs and the REST API may change a key at "
        "runtime: `read-only` (only in `server.properties` / `--override`, read at start-up), `per-broker` "
        "(for one broker id, not as the cluster-wide default), `cluster-wide` (for one broker or as the "
        "default of all). **Kafka** says whether the name is Apache Kafka's and honoured as in Kafka (with "
        "where the default or update mode differs), or Lodestream's own. Sensitive values (`PASSWORD`) are "
        "never shown by DescribeConfigs, the REST API or the logs.",
        "",
        f"### Broker configs honoured ({len(broker_honoured)})",
        "",
        "| name | type | default | valid values | update mode | Kafka | description |",
        "|---|---|---|---|---|---|---|",
    ]
    topic_default_of = {s: t.name for t in table.TOPIC_CONFIGS.values() for s in t.synonyms}
    for d in broker_honoured:
        mode = update_mode(d)
        doc = d.doc or (f"Broker default of the topic config `{topic_default_of[d.name]}`"
                        if d.name in topic_default_of else "")
        lines.append("| " + " | ".join(_cell(part) for part in (
            f"`{d.name}`", d.kafka_type, _code(d.default, d.sensitive and d.default is not None),
            valid_values(d.parse), mode, _kafka_column(d.name, d.default, kafka_broker, mode), doc)) + " |")
    lines += [
        "",
        f"### Topic configs honoured ({len(topic_honoured)})",
        "",
        "Every topic config can be set per topic (CreateTopics, AlterConfigs, IncrementalAlterConfigs, the REST "
        "API). Without a topic override the first broker property in **falls back to** that is set wins, "
        "then the default.",
        "",
        "| name | type | default | valid values | falls back to | Kafka |",
        "|---|---|---|---|---|---|",
    ]
    for t in topic_honoured:
        synonyms = ", ".join(f"`{s}`" for s in t.synonyms) or "none"
        lines.append("| " + " | ".join(_cell(part) for part in (
            f"`{t.name}`", t.kafka_type, _code(t.fallback), valid_values(t.parse), synonyms,
            _kafka_column(t.name, t.fallback, kafka_topic))) + " |")
    # Accepted with no effect, grouped by reason (the reasons in the order of their first key).
    reasons: dict[str, list[str]] = {}
    for d in sorted(table.BROKER_CONFIGS.values(), key=lambda d: d.name):
        if d.no_effect:
            reasons.setdefault(d.no_effect, []).append(f"`{d.name}`")
    for t in sorted(table.TOPIC_CONFIGS.values(), key=lambda t: t.name):
        if t.no_effect:
            reasons.setdefault(t.no_effect, []).append(f"`{t.name}` (topic)")
    count = sum(len(names) for names in reasons.values())
    lines += [
        "",
        f"### Accepted with no effect ({count})",
        "",
        "Kafka's names Lodestream accepts (validated by Kafka's type, reported by DescribeConfigs with Kafka's "
        "default) but does not act on, grouped by the reason. Set in `server.properties`, they are named in one "
        "warning at start-up; set at runtime, the broker log names them.",
        "",
    ]
    for reason, names in sorted(reasons.items(), key=lambda item: (-len(item[1]), item[0])):
        lines.append(f"- **{_cell(reason)}** ({len(names)}): {', '.join(names)}")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def splice(document: str, generated: str) -> str:
    """The document with its generated part replaced (appended, with the markers, if it has none)."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        return document.rstrip("\n") + "\n\n" + generated
    return document[:start] + generated + document[end + len(END):].lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lodestream.broker.config_reference",
                                     description="Generate the configuration reference of docs/configuration.md "
                                                 "from the broker's config table.")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document to update (default: %(default)s)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="exit 1 if the document is out of date")
    what.add_argument("--print", action="store_true", help="print the generated part instead")
    args = parser.parse_args(argv)
    generated = generate()
    if args.print:
        sys.stdout.write(generated)
        return 0
    current = args.doc.read_text(encoding="utf-8")
    wanted = splice(current, generated)
    if args.check:
        if current != wanted:
            print(f"{args.doc} is out of date with broker/config.py: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        args.doc.write_text(wanted, encoding="utf-8")
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
