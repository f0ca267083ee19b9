"""The dependency direction between top-level packages (import-linter contracts in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


LAYERS = ("protocol", "storage", "consensus", "broker", "admin")


def test_every_code_folder_is_packaged_under_lodestream():
    """Each folder of the five layers that holds Python code is a `lodestream.*` package in pyproject.toml
    (a missing one would work from the source tree and be absent from the wheel)."""
    import tomllib

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {path.parent for layer in LAYERS for path in (ROOT / layer).rglob("*.py")}
    wanted = {"lodestream." + ".".join(folder.relative_to(ROOT).parts) for folder in folders}
    assert wanted <= declared, f"not packaged: {sorted(wanted - declared)}"
    assert declared - wanted == {"lodestream"}, sorted(declared - wanted)


def test_only_the_lodestream_namespace_is_importable(tmp_path):
    """Generic top-level names (broker, storage, ...) would collide with other packages: from outside the
    source tree only `lodestream.*` imports."""
    probe = "import importlib.util, sys; print([n for n in sys.argv[1:] if importlib.util.find_spec(n)])"
    result = subprocess.run([sys.executable, "-c", probe, *LAYERS, "lodestream.broker.cli"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "['lodestream.broker.cli']", result.stdout + result.stderr
