"""ctr-export: train DIN, publish versioned bundles to Redis, activate, roll back, clean up.

ctr-export run                       # train on MovieLens-100K, publish, activate
ctr-export train --out artifacts/bundle --model din   # and the BaseModel, for the report
ctr-export publish artifacts/bundle --no-activate
ctr-export activate v1               # also the rollback
ctr-export versions
ctr-export update-rows --table item --file rows.npz
ctr-export gc --keep 3
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from core.manifest import ROW_DTYPES
from core.redis_conn import RedisClient, connect_redis
from export import gc, publish, update
from export.bundle import Bundle, load_bundle
from export.data import DEFAULT_DATA_DIR, DataUnavailable
from export.job import TrainJob, run_training

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never print the Redis password
    help=__doc__.splitlines()[0],
)
log = logging.getLogger("ctr-export")

RedisUrl = Annotated[str, typer.Option(envvar="CTR_REDIS_URL", help="redis:// or rediss://")]
Cluster = Annotated[bool, typer.Option(envvar="CTR_REDIS_CLUSTER", help="Redis Cluster")]
Namespace = Annotated[str, typer.Option(envvar="CTR_NAMESPACE", help="key prefix")]
BundleDir = Annotated[Path, typer.Option(help="local bundle folder")]
Baseline = Annotated[
    bool, typer.Option(help="also train the other model, for the report's comparison")
]
MaxUsers = Annotated[
    int | None, typer.Option(min=20, help="train on the first N users only (a quick trial)")
]
DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_BUNDLE = Path("artifacts/bundle")


def redis_client(url: str, cluster: bool) -> RedisClient:
    password = os.environ.get("CTR_REDIS_PASSWORD")
    if os.environ.get("CTR_REDIS_PASSWORD_FILE"):
        password = Path(os.environ["CTR_REDIS_PASSWORD_FILE"]).read_text().strip()
    return connect_redis(url, cluster=cluster, password=password, timeout_s=30.0)


@app.callback()
def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def train(
    out: BundleDir = DEFAULT_BUNDLE,
    model: Annotated[str, typer.Option(help="din or base (sum pooling)")] = "din",
    epochs: int = 4,
    seed: int = 0,
    activation: Annotated[str, typer.Option(help="dice or prelu")] = "dice",
    softmax: Annotated[bool, typer.Option(help="softmax over attention weights")] = False,
    data_dir: Path = DEFAULT_DATA_DIR,
    save_splits_dir: Annotated[Path | None, typer.Option("--save-splits")] = None,
    baseline: Baseline = True,
    max_users: MaxUsers = None,
    progress: bool = True,
) -> Bundle:
    """Train on MovieLens-100K, export the dense graph to ONNX, check parity, write the
    training report, save a bundle."""
    try:
        job = TrainJob(
            out=out,
            model=model,
            epochs=epochs,
            seed=seed,
            activation=activation,
            softmax=softmax,
            data_dir=data_dir,
            splits_dir=save_splits_dir,
            baseline=baseline,
            max_users=max_users,
            progress=progress,
        )
        bundle = run_training(job)
    except (ValueError, DataUnavailable) as error:
        raise typer.Exit(_fail(str(error))) from error
    typer.echo(json.dumps(bundle.metrics, indent=2))
    return bundle


@app.command("publish")
def publish_cmd(
    bundle_dir: Annotated[Path, typer.Argument()] = DEFAULT_BUNDLE,
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
    version: Annotated[str | None, typer.Option(help="default: the next vN")] = None,
    row_dtype: Annotated[str, typer.Option(help="float32 or float16")] = "float32",
    activate: Annotated[bool, typer.Option(help="flip the active pointer after")] = True,
    progress: bool = True,
) -> None:
    """Publish a saved bundle as a new version (and activate it unless --no-activate)."""
    if row_dtype not in ROW_DTYPES:
        raise typer.Exit(_fail(f"--row-dtype must be one of {ROW_DTYPES}"))
    bundle = load_bundle(bundle_dir)
    _publish(bundle, redis_url, cluster, namespace, version, row_dtype, activate, progress)


def _publish(bundle: Bundle, url, cluster, namespace, version, row_dtype, activate, progress):
    client = redis_client(url, cluster)
    manifest = publish.publish_bundle(
        client,
        namespace,
        bundle,
        version=version,
        row_dtype=row_dtype,
        activate=activate,
        progress=progress,
    )
    state = "active" if activate else "published, not active"
    typer.echo(f"{manifest.version} {state}")


@app.command()
def activate(
    version: str,
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
) -> None:
    """Make VERSION the one every replica serves; activating an older one is a rollback."""
    try:
        previous = publish.activate_version(redis_client(redis_url, cluster), namespace, version)
    except publish.PublishError as error:
        raise typer.Exit(_fail(str(error))) from error
    typer.echo(f"{version} active (was {previous})")


@app.command()
def versions(
    redis_url: RedisUrl = DEFAULT_URL, cluster: Cluster = False, namespace: Namespace = "din"
) -> None:
    """List complete versions, oldest first; the active one is marked with *."""
    for entry in publish.list_versions(redis_client(redis_url, cluster), namespace):
        typer.echo(f"{'*' if entry['active'] else ' '} {entry['version']}")


@app.command("update-rows")
def update_rows_cmd(
    file: Annotated[Path, typer.Option(help=".npz with ids (N,) and rows (N, D)")],
    table: Annotated[str, typer.Option(help="item or cat")] = "item",
    version: Annotated[str | None, typer.Option(help="default: the active one")] = None,
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
) -> None:
    """Overwrite some rows of a live version and tell every replica to drop them from cache."""
    with np.load(file) as arrays:
        ids, rows = [str(i) for i in arrays["ids"]], arrays["rows"].astype(np.float32)
    try:
        done = update.update_rows(
            redis_client(redis_url, cluster), namespace, table, ids, rows, version
        )
    except publish.PublishError as error:
        raise typer.Exit(_fail(str(error))) from error
    typer.echo(f"updated {len(ids)} {table} rows of {done}")


@app.command("gc")
def gc_cmd(
    keep: Annotated[int, typer.Option(help="newest versions to keep")] = 3,
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
) -> None:
    """Delete old versions (never the active one or the one before it)."""
    report = gc.collect_garbage(redis_client(redis_url, cluster), namespace, keep)
    typer.echo(f"deleted {len(report)} versions: {report}")


@app.command()
def run(
    out: BundleDir = DEFAULT_BUNDLE,
    model: str = "din",
    epochs: int = 4,
    seed: int = 0,
    row_dtype: str = "float32",
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
    data_dir: Path = DEFAULT_DATA_DIR,
    baseline: Baseline = True,
    max_users: MaxUsers = None,
    progress: bool = True,
) -> None:
    """Train, export, publish and activate, in one go."""
    bundle = train(
        out=out,
        model=model,
        epochs=epochs,
        seed=seed,
        data_dir=data_dir,
        baseline=baseline,
        max_users=max_users,
        progress=progress,
    )
    _publish(bundle, redis_url, cluster, namespace, None, row_dtype, True, progress)


def _fail(message: str) -> int:
    typer.secho(f"error: {message}", err=True, fg="red")
    return 1


if __name__ == "__main__":
    app()
