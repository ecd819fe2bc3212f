"""ctr-export: train DIN on a declared schema, publish versioned bundles to Redis, load live
histories, activate, roll back, clean up.

ctr-export run                                     # MovieLens-100K: train, publish, activate
ctr-export train --schema my-schema.yaml --out artifacts/bundle
ctr-export publish artifacts/bundle --no-activate
ctr-export load-histories --samples artifacts/samples
ctr-export activate v1                             # also the rollback
ctr-export versions --json
ctr-export update-rows --table item --file rows.npz
ctr-export gc --keep 3

The command line is plain argparse and every command imports what it needs when it runs, so
the operations commands (activate, versions, status, canary, promote, abort, gc, update-rows)
start in a fraction of a second: no torch, no training stack, no CLI framework.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

log = logging.getLogger("ctr-export")

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_BUNDLE = Path("artifacts/bundle")
DEFAULT_SAMPLES = Path("artifacts/samples")
DEFAULT_DATA_DIR = Path("data")


class CommandFailed(Exception):
    """A refusal the operator can act on: printed as `error: ...`, exit status 1."""


def at_least(lowest: float, kind=int):
    def parse(text: str):
        value = kind(text)
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, got {text}")
        return value

    return parse


def percent(text: str) -> float:
    value = float(text)
    if not 0.01 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 0.01 and 100, got {text}")
    return value


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes", "on"}


def store_options(parser: argparse.ArgumentParser) -> None:
    """Where the versions live: every command that touches Redis takes these."""
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("CTR_REDIS_URL", DEFAULT_URL),
        help="redis:// or rediss:// (env CTR_REDIS_URL)",
    )
    parser.add_argument(
        "--cluster",
        action=argparse.BooleanOptionalAction,
        default=env_flag("CTR_REDIS_CLUSTER"),
        help="Redis Cluster (env CTR_REDIS_CLUSTER)",
    )
    parser.add_argument(
        "--namespace",
        default=os.environ.get("CTR_NAMESPACE", "din"),
        help="key prefix (env CTR_NAMESPACE)",
    )


def flag(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    parser.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=help)


def first_paragraph(doc: str) -> str:
    return " ".join(doc.split("\n\n")[0].split())


def command(subparsers, name: str, handler, doc: str, store: bool = True):
    summary = first_paragraph(doc)
    parser = subparsers.add_parser(name, help=summary, description=summary)
    parser.set_defaults(handler=handler)
    if store:
        store_options(parser)
    return parser


def redis_client(args: argparse.Namespace):
    from core.redis_conn import connect_redis, read_password

    return connect_redis(
        args.redis_url, cluster=args.cluster, password=read_password(), timeout_s=30.0
    )


def training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--schema",
        type=Path,
        default=None,
        help="YAML feature schema (default: the MovieLens-100K example)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_BUNDLE, help="local bundle folder")
    parser.add_argument(
        "--samples-dir",
        type=Path,
        default=DEFAULT_SAMPLES,
        help="where the built samples go (Parquet shards)",
    )
    parser.add_argument("--model", default="din", help="din or base (sum pooling)")
    parser.add_argument(
        "--epochs", type=at_least(1), default=8, help="at most; see --patience (default 8)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where MovieLens-100K goes"
    )
    flag(parser, "--baseline", True, "also train the other model, for the report's comparison")
    parser.add_argument(
        "--max-users",
        type=at_least(20),
        default=None,
        help="train on the first N users only (a quick trial)",
    )
    parser.add_argument(
        "--workers", type=at_least(1), default=1, help="data-parallel training processes"
    )
    flag(parser, "--progress", True, "progress bars")
    hyperparameters(parser)


def hyperparameters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=at_least(1), default=128, help="the global batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-schedule", default="constant", help="constant or cosine")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument(
        "--mba-lambda",
        type=float,
        default=0.0,
        help="mini-batch aware L2 on embeddings (the paper's); 0 = off",
    )
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout in the top MLP")
    parser.add_argument(
        "--patience",
        type=at_least(0),
        default=2,
        help="stop after N epochs without a better valid GAUC (default 2; 0 = never)",
    )
    parser.add_argument("--activation", default="prelu", help="prelu or dice")
    flag(parser, "--softmax", False, "softmax over attention weights")
    flag(
        parser,
        "--calibrate",
        True,
        "refit the logit's scale and shift on validation users after the epoch is chosen "
        "(calibrated CTRs; AUC and GAUC unchanged)",
    )


def train_parser(subparsers) -> None:
    parser = command(subparsers, "train", train, TRAIN_DOC, store=False)
    training_options(parser)
    flag(
        parser,
        "--prepare-only",
        False,
        "build the samples and the job file for an external launcher",
    )


TRAIN_DOC = """Build samples from the schema's log, train, export the dense graph to ONNX, check
parity, write the training report, save a bundle."""


def train(args: argparse.Namespace):
    from export.distributed import TrainingFailed
    from export.job import TrainJob, run_training
    from export.movielens import DataUnavailable

    settings = {name: getattr(args, name) for name in TrainJob.__dataclass_fields__}
    try:
        job = TrainJob(**settings)
        if args.prepare_only:
            from export.distributed import write_job
            from export.job import prepare_samples

            prepare_samples(job)
            print(write_job(job))
            return None
        bundle = run_training(job)
    except (ValueError, DataUnavailable, TrainingFailed) as error:
        raise CommandFailed(str(error)) from error  # SchemaError and LogError are ValueErrors
    print(json.dumps(bundle.metrics, indent=2))
    return bundle


def publish_cmd(args: argparse.Namespace) -> str:
    """Publish a saved bundle as a new version (and activate it unless --no-activate)."""
    from core.keys import MAX_GROUPS
    from core.manifest import ROW_DTYPES
    from export.bundle import load_bundle

    if args.row_dtype not in ROW_DTYPES:
        raise CommandFailed(f"--row-dtype must be one of {ROW_DTYPES}")
    if not 0 <= args.row_groups <= MAX_GROUPS:
        raise CommandFailed(f"--row-groups must be in 0..{MAX_GROUPS}, not {args.row_groups}")
    return publish_loaded(args, load_bundle(args.bundle_dir))


def publish_loaded(args: argparse.Namespace, bundle) -> str:
    from export import publish

    manifest = publish.publish_bundle(
        redis_client(args),
        args.namespace,
        bundle,
        version=args.version,
        row_dtype=args.row_dtype,
        row_groups=args.row_groups,
        row_layout=args.row_layout,
        activate=args.activate,
        progress=args.progress,
    )
    print(f"{manifest.version} {'active' if args.activate else 'published, not active'}")
    return manifest.version


def publish_options(parser: argparse.ArgumentParser) -> None:
    from core.row_store import LAYOUTS

    parser.add_argument("--row-dtype", default="float32", help="float32 or float16")
    parser.add_argument(
        "--row-layout",
        choices=LAYOUTS,
        default="keys",
        help="keys: one Redis string per row, read with one MGET (fastest fetch); buckets: "
        "rows in hashes of about 32, about 1.15x the raw bytes instead of 1.6x, read with "
        "one EVAL; needs hash-max-listpack-value >= the row's bytes on the server",
    )
    parser.add_argument(
        "--row-groups",
        type=int,
        default=0,
        metavar="G",
        help="hash-tag rows into G slot groups, so a request touches at most G slots of a "
        "Redis Cluster (0: one key per row, untagged; on one node it changes nothing)",
    )


def activate(args: argparse.Namespace) -> None:
    """Make VERSION the one every replica serves; activating an older one is a rollback."""
    from export import versions

    try:
        previous = versions.activate_version(redis_client(args), args.namespace, args.version)
    except versions.PublishError as error:
        raise CommandFailed(str(error)) from error
    print(f"{args.version} active (was {previous})")


def list_versions_cmd(args: argparse.Namespace) -> None:
    """List complete versions, oldest first; the active one is marked with *."""
    from export.versions import list_versions

    listed = list_versions(redis_client(args), args.namespace)
    say_if_nothing_found(args, listed)
    if args.json:
        print(json.dumps(listed))
        return
    for entry in listed:
        print(f"{'*' if entry['active'] else ' '} {entry['version']}")


def load_histories(args: argparse.Namespace) -> None:
    """Write every user's latest behaviours and profile values from the training log into
    the live, unversioned state every version reads."""
    from export.live import load_from_samples
    from export.samples import open_samples

    loaded = load_from_samples(
        redis_client(args), args.namespace, open_samples(args.samples), progress=args.progress
    )
    print(f"loaded the histories and profiles of {loaded} users")


def update_rows_cmd(args: argparse.Namespace) -> None:
    """Overwrite some rows of a live version and tell every replica to drop them from cache."""
    import numpy as np

    from export import update, versions

    with np.load(args.file) as arrays:
        ids, rows = [str(i) for i in arrays["ids"]], arrays["rows"].astype(np.float32)
    try:
        done = update.update_rows(
            redis_client(args), args.namespace, args.table, ids, rows, args.version
        )
    except versions.PublishError as error:
        raise CommandFailed(str(error)) from error
    print(f"updated {len(ids)} {args.table} rows of {done}")


def canary(args: argparse.Namespace) -> None:
    """Send PERCENT of users to VERSION while the active version serves the rest; run it
    again with another --percent to change the share (users only move towards the canary)."""
    from export.canary import start_canary
    from export.versions import PublishError

    try:
        found = start_canary(
            redis_client(args),
            args.namespace,
            args.version,
            args.percent,
            max_error_rate=args.max_error_rate,
            max_p99_ms=args.max_p99_ms,
        )
    except (PublishError, ValueError) as error:
        raise CommandFailed(str(error)) from error
    print(f"canary {found.version} at {found.percent:g}%")


def promote(args: argparse.Namespace) -> None:
    """Make the canary the active version, in one step; the canary ends."""
    from export.canary import promote as promote_canary
    from export.versions import PublishError

    try:
        version = promote_canary(redis_client(args), args.namespace)
    except PublishError as error:
        raise CommandFailed(str(error)) from error
    print(f"{version} active (promoted)")


def abort(args: argparse.Namespace) -> None:
    """End the canary: every user goes back to the active version."""
    from export.canary import abort_canary

    version = abort_canary(redis_client(args), args.namespace)
    print(f"canary {version} aborted" if version else "no canary was running")


def status(args: argparse.Namespace) -> None:
    """The active version, the one before it, the canary and its share."""
    from export.canary import status as read_status

    found = read_status(redis_client(args), args.namespace)
    say_if_nothing_found(args, found["active"])
    if args.json:
        print(json.dumps(found))
        return
    print(f"active   {found['active']}\nprevious {found['previous']}")
    print(f"canary   {found['canary']} ({found['percent']:g}% of users)")


def gc_cmd(args: argparse.Namespace) -> None:
    """Delete old versions (never the active one or the one before it)."""
    from export import gc

    report = gc.collect_garbage(redis_client(args), args.namespace, args.keep)
    print(f"deleted {len(report)} versions: {report}")


def run(args: argparse.Namespace) -> None:
    """Train, export, publish, load the live histories and activate, in one go."""
    bundle = train(args)
    version = publish_loaded(argparse.Namespace(**vars(args), version=None, activate=False), bundle)
    load_histories(argparse.Namespace(**vars(args), samples=args.samples_dir))
    activate(argparse.Namespace(**vars(args), version=version))


def ops_parsers(subparsers) -> None:
    parser = command(subparsers, "activate", activate, activate.__doc__)
    parser.add_argument("version")
    parser = command(subparsers, "versions", list_versions_cmd, list_versions_cmd.__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON document for scripts")
    parser = command(subparsers, "status", status, status.__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON document for scripts")
    parser = command(subparsers, "canary", canary, canary.__doc__)
    parser.add_argument("version")
    parser.add_argument("--percent", type=percent, default=10.0, help="share of users, %%")
    parser.add_argument(
        "--max-error-rate",
        type=float,
        default=None,
        help="replicas abort the canary above this error rate (0-1)",
    )
    parser.add_argument(
        "--max-p99-ms",
        type=float,
        default=None,
        help="replicas abort the canary above this p99 latency",
    )
    command(subparsers, "promote", promote, promote.__doc__)
    command(subparsers, "abort", abort, abort.__doc__)
    parser = command(subparsers, "gc", gc_cmd, gc_cmd.__doc__)
    parser.add_argument("--keep", type=at_least(0), default=3, help="newest versions to keep")
    parser = command(subparsers, "update-rows", update_rows_cmd, update_rows_cmd.__doc__)
    parser.add_argument("--file", type=Path, required=True, help=".npz with ids (N,), rows (N, D)")
    parser.add_argument("--table", default="item", help="item, or a field's name")
    parser.add_argument("--version", default=None, help="default: the active one")


def publishing_parsers(subparsers) -> None:
    parser = command(subparsers, "publish", publish_cmd, publish_cmd.__doc__)
    parser.add_argument("bundle_dir", nargs="?", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--version", default=None, help="default: the next vN")
    publish_options(parser)
    flag(parser, "--activate", True, "flip the active pointer after")
    flag(parser, "--progress", True, "progress bars")
    parser = command(subparsers, "load-histories", load_histories, load_histories.__doc__)
    parser.add_argument(
        "--samples", type=Path, default=DEFAULT_SAMPLES, help="samples built by train"
    )
    flag(parser, "--progress", True, "progress bars")
    parser = command(subparsers, "run", run, run.__doc__)
    training_options(parser)
    publish_options(parser)
    parser.set_defaults(prepare_only=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctr-export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    train_parser(subparsers)
    publishing_parsers(subparsers)
    ops_parsers(subparsers)
    return parser


def app(argv: list[str] | None = None) -> int:
    """The console script: parse, run one command, return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.handler(args)
    except CommandFailed as error:  # the message only: never a traceback's locals
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if not is_redis_error(error):
            raise
        from core.redis_conn import unreachable_message

        if args.verbose:
            traceback.print_exc()
        url = getattr(args, "redis_url", DEFAULT_URL)
        print(f"error: {unreachable_message(url, error)}", file=sys.stderr)
        return 1
    return 0


def is_redis_error(error: Exception) -> bool:
    """redis-py's errors (connection, authentication, timeout, response), cluster ones too;
    checked by name, so a command that never touched Redis never imports it here."""
    return type(error).__module__.split(".")[0] == "redis"


def say_if_nothing_found(args: argparse.Namespace, found) -> None:
    """Nothing in the namespace, from an address nobody chose: say where we looked."""
    if not found and "CTR_REDIS_URL" not in os.environ and args.redis_url == DEFAULT_URL:
        print(
            f"note: nothing in namespace {args.namespace!r} at {DEFAULT_URL}, the default "
            "address; set CTR_REDIS_URL (or --redis-url) to your Redis",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(app())
