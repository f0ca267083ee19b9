"""LODESTREAM_* environment variables as broker configs (the container images' way): the mapping, the
precedence file < environment < --override, and which variables are not config."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lodestream.broker.config import BrokerConfig, ConfigError, env_variable_key, environment_overrides

REPO = Path(__file__).resolve().parent.parent
LODESTREAM = str(Path(sys.executable).parent / "lodestream")


@pytest.mark.parametrize("name, key", [
    ("LODESTREAM_LOG_DIRS", "log.dirs"),
    ("LODESTREAM_NODE_ID", "node.id"),
    ("LODESTREAM_CONTROLLER_QUORUM_VOTERS", "controller.quorum.voters"),
    ("LODESTREAM_LISTENER_NAME_SASL__PLAINTEXT_PLAIN_SASL_JAAS_CONFIG",
     "listener.name.sasl_plaintext.plain.sasl.jaas.config"),
    ("LODESTREAM_SOME___DASHED_KEY", "some-dashed.key"),
])
def test_names_map_as_in_kafkas_docker_image(name, key):
    assert env_variable_key(name) == key


def test_only_config_variables_are_taken():
    environ = {"LODESTREAM_NUM_PARTITIONS": "4", "LODESTREAM_ADMIN_LISTENERS": "",
               "LODESTREAM_COMPAT_BROKER": "cluster", "LODESTREAM_BOOTSTRAP_SERVER": "h:1",
               "KAFKA_NUM_PARTITIONS": "9", "PATH": "/bin"}
    assert environment_overrides(environ) == {"num.partitions": "4", "admin.listeners": ""}


def test_a_misspelt_config_variable_is_refused_with_every_name():
    with pytest.raises(ConfigError) as refused:
        environment_overrides({"LODESTREAM_LOG_DIR_S": "/x", "LODESTREAM_NUM_PARTITION": "3",
                               "LODESTREAM_NODE_ID": "1"})
    assert "LODESTREAM_LOG_DIR_S (log.dir.s)" in str(refused.value)
    assert "LODESTREAM_NUM_PARTITION (num.partition)" in str(refused.value)


def test_the_repositorys_own_variables_are_not_config():
    """Tools and tests read LODESTREAM_* variables of their own: none may be taken for (or refused as) config.
    A new one whose first word is a config's (LODESTREAM_LOG_FORMAT) fails here: pick another name."""
    used = set()
    for path in REPO.rglob("*.py"):
        if ".venv" not in path.parts and path.name not in ("config.py", "test_env_config.py", "test_deploy.py"):
            used.update(re.findall(r"\bLODESTREAM_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")))
    used -= {"LODESTREAM_SCHEMAS"}  # a Python name (protocol/codec.py), not a variable
    assert {"LODESTREAM_COMPAT_BROKER", "LODESTREAM_TIERING_CRASH_AT", "LODESTREAM_BOOTSTRAP_SERVER"} <= used
    assert environment_overrides({name: "x" for name in used}) == {}


def test_precedence_file_then_environment_then_overrides(tmp_path):
    path = tmp_path / "server.properties"
    path.write_text("num.partitions=3\nnode.id=2\n")
    environment = environment_overrides({"LODESTREAM_NUM_PARTITIONS": "4", "LODESTREAM_DEFAULT_REPLICATION_FACTOR": "1"})
    config = BrokerConfig.load(path, [], environment)
    assert (config.get("num.partitions"), config.node_id) == (4, 2)
    assert BrokerConfig.load(path, ["num.partitions=5"], environment).get("num.partitions") == 5
    with pytest.raises(ConfigError, match="num.partitions"):
        BrokerConfig.load(path, [], {"num.partitions": "many"})


def test_serve_refuses_a_misspelt_variable_and_takes_the_rest(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "LODESTREAM_LOG_DIRS": str(tmp_path / "data"), "LODESTREAM_LISTENERS": "PLAINTEXT://127.0.0.1:0",
           "LODESTREAM_ADMIN_LISTENERS": "", "LODESTREAM_NUM_PARTITIONZ": "3"}
    result = subprocess.run([LODESTREAM, "serve"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "configuration error: environment variable LODESTREAM_NUM_PARTITIONZ (num.partitionz)" in result.stderr
    assert "Traceback" not in result.stderr
    # A bad value from the environment is reported like one from the file.
    env.pop("LODESTREAM_NUM_PARTITIONZ")
    env["LODESTREAM_NUM_PARTITIONS"] = "many"
    result = subprocess.run([LODESTREAM, "serve"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "num.partitions" in result.stderr, result.stderr[-2000:]
