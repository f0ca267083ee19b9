"""The `lodestream` command: `serve` runs a broker (broker/process.py); `topics`, `groups`, `configs`,
`tiering` and `namespaces` are a client of a running broker (cli/cluster_tools.py), like Kafka's kafka-topics.sh; `dev-cluster` runs
a local KRaft cluster and `random-cluster-id` prints a cluster id (cli/dev_cluster.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lodestream.cli import cluster_tools, dev_cluster


def _version() -> str:
    """The installed package's version (pyproject.toml's, through the package metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lodestream")
    except PackageNotFoundError:  # run from a tree that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lodestream", description="Kafka-compatible broker")
    parser.add_argument("--version", action="version", version=f"lodestream {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="run a broker", description="Run a broker with Kafka's broker property names.",
        epilog="Every key, with its type, default, valid values, update mode and what Kafka does with it: "
               "docs/configuration.md (generated from broker/config.py). Operating it: docs/operations.md.")
    serve.add_argument("--config", type=Path, help="Kafka-style server.properties")
    serve.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                       help="set a broker property (repeatable); wins over --config")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument("--ready-file", type=Path,
                       help="write {\"listeners\": {NAME: host:port}} here once listening (for tests and tools)")
    cluster_tools.add_subcommands(sub)
    dev_cluster.add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in cluster_tools.COMMANDS:
        return cluster_tools.run(args)
    if args.command in ("dev-cluster", "random-cluster-id"):
        return dev_cluster.run(args)
    from lodestream.broker.process import serve  # the broker's imports only when it runs

    return serve(args.config, args.override, args.log_level, args.ready_file)


if __name__ == "__main__":
    sys.exit(main())
