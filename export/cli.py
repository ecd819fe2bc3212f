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

The operations commands import neither torch nor the training stack, so they start fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

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
SchemaPath = Annotated[
    Path | None,
    typer.Option("--schema", help="YAML feature schema (default: the MovieLens-100K example)"),
]
SamplesDir = Annotated[Path, typer.Option(help="where the built samples go (Parquet shards)")]
Baseline = Annotated[
    bool, typer.Option(help="also train the other model, for the report's comparison")
]
MaxUsers = Annotated[
    int | None, typer.Option(min=20, help="train on the first N users only (a quick trial)")
]
AsJson = Annotated[bool, typer.Option("--json", help="one JSON document for scripts")]
DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_BUNDLE = Path("artifacts/bundle")
DEFAULT_SAMPLES = Path("artifacts/samples")
DEFAULT_DATA_DIR = Path("data")


def redis_client(url: str, cluster: bool):
    from core.redis_conn import connect_redis, read_password

    return connect_redis(url, cluster=cluster, password=read_password(), timeout_s=30.0)


@app.callback()
def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def train(
    schema: SchemaPath = None,
    out: BundleDir = DEFAULT_BUNDLE,
    samples_dir: SamplesDir = DEFAULT_SAMPLES,
    model: Annotated[str, typer.Option(help="din or base (sum pooling)")] = "din",
    epochs: int = 4,
    seed: int = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="the global batch")] = 128,
    lr: float = 1e-3,
    lr_schedule: Annotated[str, typer.Option(help="constant or cosine")] = "constant",
    weight_decay: float = 0.0,
    mba_lambda: Annotated[
        float, typer.Option(help="mini-batch aware L2 on embeddings (the paper's); 0 = off")
    ] = 0.0,
    dropout: Annotated[float, typer.Option(help="dropout in the top MLP")] = 0.0,
    patience: Annotated[
        int | None, typer.Option(help="stop after N epochs without a better valid GAUC")
    ] = None,
    activation: Annotated[str, typer.Option(help="dice or prelu")] = "dice",
    softmax: Annotated[bool, typer.Option(help="softmax over attention weights")] = False,
    data_dir: Annotated[Path, typer.Option(help="where MovieLens-100K goes")] = DEFAULT_DATA_DIR,
    baseline: Baseline = True,
    max_users: MaxUsers = None,
    workers: Annotated[int, typer.Option(min=1, help="data-parallel training processes")] = 1,
    prepare_only: Annotated[
        bool, typer.Option(help="build the samples and the job file for an external launcher")
    ] = False,
    progress: bool = True,
):
    """Build samples from the schema's log, train, export the dense graph to ONNX, check
    parity, write the training report, save a bundle."""
    from export.distributed import TrainingFailed
    from export.job import TrainJob, run_training
    from export.movielens import DataUnavailable

    try:
        job = TrainJob(
            out=out,
            schema=schema,
            samples_dir=samples_dir,
            model=model,
            epochs=epochs,
            seed=seed,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,
            weight_decay=weight_decay,
            mba_lambda=mba_lambda,
            dropout=dropout,
            patience=patience,
            activation=activation,
            softmax=softmax,
            data_dir=data_dir,
            baseline=baseline,
            max_users=max_users,
            progress=progress,
            workers=workers,
        )
        if prepare_only:
            from export.distributed import write_job
            from export.job import prepare_samples

            prepare_samples(job)
            typer.echo(str(write_job(job)))
            return None
        bundle = run_training(job)
    except (
        ValueError,
        DataUnavailable,
        TrainingFailed,
    ) as error:  # SchemaError and LogError are ValueErrors
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
    from core.manifest import ROW_DTYPES
    from export.bundle import load_bundle

    if row_dtype not in ROW_DTYPES:
        raise typer.Exit(_fail(f"--row-dtype must be one of {ROW_DTYPES}"))
    bundle = load_bundle(bundle_dir)
    _publish(bundle, redis_url, cluster, namespace, version, row_dtype, activate, progress)


def _publish(bundle, url, cluster, namespace, version, row_dtype, activate, progress):
    from export import publish

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
    return manifest.version


@app.command()
def activate(
    version: str,
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
) -> None:
    """Make VERSION the one every replica serves; activating an older one is a rollback."""
    from export import versions as publish

    try:
        previous = publish.activate_version(redis_client(redis_url, cluster), namespace, version)
    except publish.PublishError as error:
        raise typer.Exit(_fail(str(error))) from error
    typer.echo(f"{version} active (was {previous})")


@app.command()
def versions(
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
    as_json: AsJson = False,
) -> None:
    """List complete versions, oldest first; the active one is marked with *."""
    from export.versions import list_versions

    listed = list_versions(redis_client(redis_url, cluster), namespace)
    if as_json:
        typer.echo(json.dumps(listed))
        return
    for entry in listed:
        typer.echo(f"{'*' if entry['active'] else ' '} {entry['version']}")


@app.command("load-histories")
def load_histories(
    samples: Annotated[Path, typer.Option(help="samples built by train")] = DEFAULT_SAMPLES,
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
    progress: bool = True,
) -> None:
    """Write every user's latest behaviours and profile values from the training log into
    the live, unversioned state every version reads."""
    from export.live import load_from_samples
    from export.samples import open_samples

    client = redis_client(redis_url, cluster)
    loaded = load_from_samples(client, namespace, open_samples(samples), progress=progress)
    typer.echo(f"loaded the histories and profiles of {loaded} users")


@app.command("update-rows")
def update_rows_cmd(
    file: Annotated[Path, typer.Option(help=".npz with ids (N,) and rows (N, D)")],
    table: Annotated[str, typer.Option(help="item, or a field's name")] = "item",
    version: Annotated[str | None, typer.Option(help="default: the active one")] = None,
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
) -> None:
    """Overwrite some rows of a live version and tell every replica to drop them from cache."""
    import numpy as np

    from export import update
    from export import versions as publish

    with np.load(file) as arrays:
        ids, rows = [str(i) for i in arrays["ids"]], arrays["rows"].astype(np.float32)
    try:
        done = update.update_rows(
            redis_client(redis_url, cluster), namespace, table, ids, rows, version
        )
    except publish.PublishError as error:
        raise typer.Exit(_fail(str(error))) from error
    typer.echo(f"updated {len(ids)} {table} rows of {done}")


@app.command()
def canary(
    version: str,
    percent: Annotated[float, typer.Option(min=0.01, max=100, help="share of users, %")] = 10.0,
    max_error_rate: Annotated[
        float | None, typer.Option(help="replicas abort the canary above this error rate (0-1)")
    ] = None,
    max_p99_ms: Annotated[
        float | None, typer.Option(help="replicas abort the canary above this p99 latency")
    ] = None,
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
) -> None:
    """Send PERCENT of users to VERSION while the active version serves the rest; run it
    again with another --percent to change the share (users only move towards the canary)."""
    from export.canary import start_canary
    from export.versions import PublishError

    client = redis_client(redis_url, cluster)
    try:
        found = start_canary(
            client,
            namespace,
            version,
            percent,
            max_error_rate=max_error_rate,
            max_p99_ms=max_p99_ms,
        )
    except (PublishError, ValueError) as error:
        raise typer.Exit(_fail(str(error))) from error
    typer.echo(f"canary {found.version} at {found.percent:g}%")


@app.command()
def promote(
    redis_url: RedisUrl = DEFAULT_URL, cluster: Cluster = False, namespace: Namespace = "din"
) -> None:
    """Make the canary the active version, in one step; the canary ends."""
    from export.canary import promote as promote_canary
    from export.versions import PublishError

    try:
        version = promote_canary(redis_client(redis_url, cluster), namespace)
    except PublishError as error:
        raise typer.Exit(_fail(str(error))) from error
    typer.echo(f"{version} active (promoted)")


@app.command()
def abort(
    redis_url: RedisUrl = DEFAULT_URL, cluster: Cluster = False, namespace: Namespace = "din"
) -> None:
    """End the canary: every user goes back to the active version."""
    from export.canary import abort_canary

    version = abort_canary(redis_client(redis_url, cluster), namespace)
    typer.echo(f"canary {version} aborted" if version else "no canary was running")


@app.command()
def status(
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
    as_json: AsJson = False,
) -> None:
    """The active version, the one before it, the canary and its share."""
    from export.canary import status as read_status

    found = read_status(redis_client(redis_url, cluster), namespace)
    if as_json:
        typer.echo(json.dumps(found))
        return
    typer.echo(f"active   {found['active']}\nprevious {found['previous']}")
    typer.echo(f"canary   {found['canary']} ({found['percent']:g}% of users)")


@app.command("gc")
def gc_cmd(
    keep: Annotated[int, typer.Option(help="newest versions to keep")] = 3,
    redis_url: RedisUrl = DEFAULT_URL,
    cluster: Cluster = False,
    namespace: Namespace = "din",
) -> None:
    """Delete old versions (never the active one or the one before it)."""
    from export import gc

    report = gc.collect_garbage(redis_client(redis_url, cluster), namespace, keep)
    typer.echo(f"deleted {len(report)} versions: {report}")


@app.command()
def run(
    schema: SchemaPath = None,
    out: BundleDir = DEFAULT_BUNDLE,
    samples_dir: SamplesDir = DEFAULT_SAMPLES,
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
    workers: Annotated[int, typer.Option(min=1, help="data-parallel training processes")] = 1,
    progress: bool = True,
) -> None:
    """Train, export, publish, load the live histories and activate, in one go."""
    bundle = train(
        schema=schema,
        out=out,
        samples_dir=samples_dir,
        model=model,
        epochs=epochs,
        seed=seed,
        data_dir=data_dir,
        baseline=baseline,
        max_users=max_users,
        workers=workers,
        progress=progress,
    )
    version = _publish(bundle, redis_url, cluster, namespace, None, row_dtype, False, progress)
    load_histories(samples_dir, redis_url, cluster, namespace, progress)
    activate(version, redis_url, cluster, namespace)


def _fail(message: str) -> int:
    typer.secho(f"error: {message}", err=True, fg="red")
    return 1


if __name__ == "__main__":
    app()
