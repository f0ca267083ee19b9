"""`schemathesis run` against /openapi.json of a live `lodestream serve` process.

Every operation of the REST API gets generated requests (valid and invalid
bodies, parameters and paths; the examples, coverage, fuzzing and stateful
phases, following the OpenAPI links from a created topic) with a bounded number
of examples, one worker and a fixed seed, so the run is reproducible and ends
in well under two minutes. It must finish with no failure of schemathesis's
checks: no 5xx (not_a_server_error), responses and their headers and content
types as documented (response_schema_conformance, status_code_conformance,
...), schema-violating requests rejected with a 4xx (negative_data_rejection),
405 with a correct Allow header for undocumented methods, deleted resources
gone (use_after_free) ...

Two adjustments, both in the generated config:
* cluster_id is the real one, so requests reach the topic, config and record
  logic instead of all answering 404 for an unknown cluster (unknown cluster
  ids are covered by test_rest_api.py);
* positive_data_acceptance is off: it expects every schema-valid request to
  succeed, but which config names exist, which are read-only, which values
  parse and whether a topic already exists are broker rules, not schema, and
  are rightly 400s.
And one in a hook (schemathesis_hooks.py): a generated partitions_count
between 9 and 10000 is scaled down to 1..8, so hypothesis's boundary values do
not make the run a benchmark of creating 10000-partition topics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker_process import BrokerProcess

MAX_EXAMPLES = 10
SEED = 20240506
BUDGET_S = 120


@pytest.fixture
def rest_broker(tmp_path):
    process = BrokerProcess(tmp_path / "broker", {"admin.listeners": "http://127.0.0.1:0"})
    process.start()
    yield process
    process.stop()


def test_schemathesis_run_finds_no_failure(rest_broker, tmp_path):
    info = json.loads(rest_broker.ready_path.read_text())
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'hooks = "schemathesis_hooks"\n\n[parameters]\ncluster_id = "{info["cluster_id"]}"\n')
    command = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "--no-color",
               "run", f"{info['listeners']['ADMIN']}/openapi.json",
               "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
               "--exclude-checks", "positive_data_acceptance", "--generation-database", "none",
               "--request-timeout", "30", "--report-dir", str(tmp_path / "report")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=BUDGET_S + 60, cwd=tmp_path, env=env)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    assert rest_broker.alive(), f"broker died; log tail:\n{rest_broker.log_tail()}"
    assert "Traceback" not in rest_broker.log_path.read_text(), rest_broker.log_tail(80)
    assert elapsed < BUDGET_S, f"schemathesis took {elapsed:.0f}s"
    print(output[-3000:])
