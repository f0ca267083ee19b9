"""deploy/prometheus/alerts.yml names only metrics a running broker serves: every metric in its rules is
on the /metrics of a `lodestream serve` process (tiered storage on, so its series are listed too), and
docs/operations.md explains every alert."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from broker_process import BrokerProcess

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_OWN = {"up"}  # set by Prometheus for each scrape, not by the broker
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "instance", "job", "request", "error",
                "limit", "synced", "result", "mechanism", "group", "on", "without", "max", "min", "avg"}


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return names - PROMQL_WORDS


def test_every_rule_is_complete_and_explained():
    rules = _rules()
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        assert f"`{rule['alert']}`" in operations, f"docs/operations.md does not explain {rule['alert']}"


def test_every_metric_in_the_rules_is_served_by_a_broker(tmp_path):
    stores = ",".join((tmp_path / f"store{i}").as_uri() for i in range(6))
    process = BrokerProcess(tmp_path, {"admin.listeners": "http://127.0.0.1:0",
                                       "remote.log.storage.system.enable": "true", "remote.fragment.stores": stores})
    process.start()
    try:
        url = json.loads(process.ready_path.read_text())["listeners"]["ADMIN"]
        response = httpx.get(f"{url}/metrics", timeout=30)
        assert response.status_code == 200
    finally:
        process.stop()
    served = set()
    for family in text_string_to_metric_families(response.text):
        served.add(family.name)
        served.update(sample.name for sample in family.samples)
        if family.type == "counter":
            served.add(family.name + "_total")
        if family.type == "histogram":
            served.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    used = set().union(*(_metric_names(rule["expr"]) for rule in _rules())) - PROMETHEUS_OWN
    assert used, "no metric found in the rules"
    assert not used - served, f"alert rules name metrics the broker does not serve: {sorted(used - served)}"
    assert {"lodestream_offline_log_dirs", "process_open_fds", "lodestream_remote_read_errors_total"} <= used
