"""The dependency direction between top-level packages (import-linter contracts in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


LAYERS = ("protocol", "storage", "consensus", "broker", "admin", "cli")


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
    result = subprocess.run([sys.executable, "-c", probe, *LAYERS, "lodestream.broker.process"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "['lodestream.broker.process']", result.stdout + result.stderr


# The partition layer (broker/partition.py with the replica manager's committer) is the only door to a
# partition's log: handlers, the REST API, metrics and the coordinators use Partition's offsets and reads.
PARTITION_LAYER = {ROOT / "broker" / "partition.py", ROOT / "broker" / "replica_manager.py"}
# Who may import the storage package: the partition layer, the compaction rules it runs on a log, the
# broker that opens the store, the metadata quorum's own log (__cluster_metadata), and the reader of
# offloaded segments and the offloader (the remote tier's part of the partition layer), and the config
# checks of remote.erasure.code (the scheme's parser lives with the codec).
STORAGE_IMPORTERS = PARTITION_LAYER | {ROOT / "broker" / "compaction.py", ROOT / "broker" / "broker.py",
                                       ROOT / "broker" / "metadata_log.py", ROOT / "broker" / "remote_reader.py",
                                       ROOT / "broker" / "remote_log.py", ROOT / "broker" / "config.py"}


def _modules(*layers: str):
    import ast

    for layer in layers:
        for path in sorted((ROOT / layer).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def test_only_the_partition_layer_reaches_a_log():
    import ast

    violations = []
    for path, tree in _modules("broker", "admin"):
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if path not in PARTITION_LAYER and isinstance(node, ast.Attribute) and node.attr == "_log":
                violations.append(f"{where} reaches a partition's log")
            if path not in STORAGE_IMPORTERS and isinstance(node, ast.ImportFrom) and node.level == 0 \
                    and (node.module or "").startswith("lodestream.storage"):
                violations.append(f"{where} imports {node.module}")
    assert not violations, violations


def import_cycles(graph) -> list[list[str]]:
    """Groups of lodestream modules that import each other, directly or around a loop (strongly connected
    components of the import graph, typing-only imports included: a cycle is a cycle to the reader)."""
    modules = sorted(m for m in graph.modules if m.startswith("lodestream."))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c.startswith("lodestream.")), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_import_cycles():
    """The broker, its coordinators, the replica manager, metrics and producer ids once imported each other
    in a loop; coordinators now get narrow services (an internal-topic log, a clock, callables)."""
    import grimp

    graph = grimp.build_graph("lodestream", exclude_type_checking_imports=False)
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_planted_cycle():
    import grimp

    graph = grimp.build_graph("lodestream", exclude_type_checking_imports=False)
    graph.add_import(importer="lodestream.broker.partition", imported="lodestream.broker.broker")
    cycles = import_cycles(graph)
    assert any({"lodestream.broker.partition", "lodestream.broker.broker"} <= set(c) for c in cycles), cycles
