"""Dask execution for the offline stages: a local, SLURM or in-process ("serial") backend,
and one progress-reporting map over per-item tasks.

Stages hand `map_tasks` a picklable function and a list of items; results stream back as
they complete (so each can be recorded at once, which is what makes stages resumable),
with a rich progress bar showing items/s and ETA.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from pipeline.core.errors import MMAError
from pipeline.core.progress import progress_bar

log = logging.getLogger(__name__)

CLUSTER_KINDS = ("local", "slurm", "serial")


@dataclass
class ClusterSpec:
    """Where tasks run. `slurm` holds dask-jobqueue options (queue, walltime, memory, gpus, ...)."""

    kind: str = "local"
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str | None = None
    slurm: dict[str, Any] = field(default_factory=dict)


def slurm_cluster_options(spec: ClusterSpec) -> dict[str, Any]:
    """dask-jobqueue SLURMCluster keyword arguments for `spec`: one process per job with
    `threads_per_worker` cores; queue/walltime/memory from the CLI; `--gres=gpu:N` added to the
    `#SBATCH` lines of dask's own config (`jobqueue.slurm.job-extra-directives`, where an account's
    QOS or constraint goes), which an explicit list would otherwise replace."""
    import dask

    opts = {k: v for k, v in (spec.slurm or {}).items() if v not in (None, "")}
    gpus = int(opts.pop("gpus", 0) or 0)
    extra = list(opts.pop("job_extra_directives", None) or dask.config.get("jobqueue.slurm.job-extra-directives",
                                                                            default=None) or [])
    if gpus:
        extra.append(f"--gres=gpu:{gpus}")
    return {"queue": opts.pop("queue", None), "walltime": opts.pop("walltime", "02:00:00"),
            "memory": opts.pop("memory", "16GB"), "cores": spec.threads_per_worker, "processes": 1,
            "job_extra_directives": extra, **opts}


def _slurm_cluster(spec: ClusterSpec) -> Any:
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:  # optional extra
        raise MMAError("--cluster slurm needs dask-jobqueue: pip install 'mma[slurm]'") from exc
    cluster = SLURMCluster(**slurm_cluster_options(spec))
    cluster.scale(jobs=spec.workers)
    return cluster


@contextlib.contextmanager
def open_client(spec: ClusterSpec) -> Iterator[Any]:
    """Yield a distributed.Client (local or SLURM), or None for in-process execution."""
    if spec.kind not in CLUSTER_KINDS:
        raise MMAError(f"--cluster {spec.kind!r} is not one of {', '.join(CLUSTER_KINDS)}")
    if spec.kind == "serial":
        yield None
        return
    from distributed import Client, LocalCluster

    # importing distributed resets its loggers to INFO; keep its chatter out of our logs
    logging.getLogger("distributed").setLevel(max(logging.getLogger().getEffectiveLevel(), logging.WARNING))
    if spec.kind == "local":
        cluster = LocalCluster(
            n_workers=spec.workers,
            threads_per_worker=spec.threads_per_worker,
            processes=True,
            memory_limit=spec.memory_limit or "auto",
            dashboard_address=":0",
            silence_logs=logging.WARNING,
        )
    else:
        cluster = _slurm_cluster(spec)
    client = Client(cluster)
    log.info("Dask dashboard: %s", client.dashboard_link)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def worker_lost_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean a task's worker process died (not that the task's code failed)."""
    from distributed.scheduler import KilledWorker

    return (KilledWorker,)


def map_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    client: Any | None,
    *,
    description: str = "working",
    unit: str = "clips",
    on_result: Callable[[Any, Any], None] | None = None,
    on_error: Callable[[Any, BaseException], None] | None = None,
) -> list[Any]:
    """Run fn(item) for every item (on the client, or in-process when client is None).

    Results are handed to `on_result(item, result)` as they complete. A task whose worker died
    (Dask's KilledWorker: a crash in native code on a bad input, out of memory) is handed to
    `on_error(item, exc)`; any other exception a task raises is a bug and stops the run with its
    traceback (as does a lost worker when there is no handler). Tasks report expected per-item
    failures in their return value. Returns the results in completion order (failed items omitted).
    """
    results: list[Any] = []
    start = time.perf_counter()
    with progress_bar(description, len(items), unit) as progress:
        task = progress.add_task(description, total=len(items))

        def handle(item: Any, result: Any = None, exc: BaseException | None = None) -> None:
            if exc is not None:
                if on_error is None:
                    raise exc
                on_error(item, exc)
            else:
                results.append(result)
                if on_result is not None:
                    on_result(item, result)
            progress.advance(task)

        if client is None:
            for item in items:
                handle(item, fn(item))
        else:
            from distributed import as_completed

            futures = client.map(fn, list(items), pure=False)
            owner = {f.key: item for f, item in zip(futures, items)}
            for future in as_completed(futures):
                item = owner[future.key]
                try:
                    result = future.result()
                except worker_lost_errors() as exc:
                    handle(item, exc=exc)
                else:
                    handle(item, result)
                future.release()
    elapsed = time.perf_counter() - start
    log.info("%s: %d %s in %.1f s (%.2f %s/s)", description, len(items), unit, elapsed,
             len(items) / elapsed if elapsed > 0 else 0.0, unit)
    return results
