"""The `mma` command line: parses arguments and delegates to `pipeline/` and `model/`.

A command turns its options into a `ConfigRequest` (resolved by `pipeline.core.stage_config`, as for
any Python caller; the config flags come from its table `CONFIG_FLAGS`), calls one stage function
and hands the typed result to `emit`: text or `--json` on stdout, `error: ...` lines on stderr, the
result's exit status. User errors (`MMAError`, `ModelError`) are one line; anything else is a bug
and keeps its traceback. Stage modules are imported inside commands: they pull in torch, dask and
zarr, which `mma --help` should not wait for.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from typing_extensions import Annotated

from pipeline.core.errors import USER_ERRORS
from pipeline.core.folds import FOLDS
from pipeline.core.paths import Workspace
from pipeline.core.project import ProjectFile, dataset_root, load_project, project_workspace
from pipeline.core.results import StageResult
from pipeline.core.stage_config import (
    CONFIG_FLAGS,
    ENCODER_FLAGS,
    MODEL_FLAGS,
    SWEEP_FLAGS,
    ConfigRequest,
    resolve_stage_config,
    stage_dataset,
)
from pipeline.results.uncertainty import DEFAULT_RESAMPLES

app = typer.Typer(
    name="mma",
    help="MMA-DFER: audio-visual dynamic facial expression recognition, stage by stage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Inspect and convert MMA-DFER models.", no_args_is_help=True)
app.add_typer(model_app, name="model")
weights_app = typer.Typer(help="The checkpoints the method needs: list, fetch, add (register a downloaded file), check.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@dataclasses.dataclass
class State:
    """Global options shared by every command."""

    workspace: Workspace
    seed: Optional[int]
    project: ProjectFile = dataclasses.field(default_factory=ProjectFile)


def _state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if obj is None:  # invoked without the callback (not through `mma`)
        obj = State(Workspace.from_env(), None)
    return obj


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def delegates(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing exceptions of the wrapped command into a one-line error and exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code)

    return wrapper


def emit(result: StageResult, as_json: bool = False) -> None:
    """Print a stage's result (its text, or its JSON), its errors on stderr, and exit with its status."""
    typer.echo(json.dumps(result.to_json(), indent=2, default=str) if as_json else result.text())
    for line in result.errors:
        typer.echo(f"error: {line}", err=True)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


PresetOpt = Annotated[Optional[str], typer.Option(
    "--preset", help="Model/training preset: paper | tiny (default: mma.yaml's, else paper).")]
DatasetArg = Annotated[Optional[str], typer.Argument(
    help="dfew | mafw | synth (default: mma.yaml's `dataset`, else the only one prepared).", show_default=False)]
SetOpt = Annotated[Optional[List[str]], typer.Option("--set", help="Override any field: section.field=value (repeatable).")]
FoldOpt = Annotated[int, typer.Option("--fold", min=FOLDS[0], max=FOLDS[-1], help=f"Test fold k ({FOLDS[0]}..{FOLDS[-1]}).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo finished work instead of skipping it.")]
NoSpaceCheckOpt = Annotated[bool, typer.Option(
    "--no-space-check", help="Start even when the estimate of what it writes exceeds the free disk space.")]
AllowPartialOpt = Annotated[bool, typer.Option(
    "--allow-partial", help="Write/average a result although some test clips could not be read (marked partial).")]
MixedOpt = Annotated[bool, typer.Option(
    "--mixed", help="Average folds whose data or model provenance (or training source) differ.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
BootstrapOpt = Annotated[int, typer.Option(
    "--bootstrap", min=0, help="Resamples of the test clips for the 95% intervals (0: none; fixed RNG seed).")]
ClusterOpt = Annotated[str, typer.Option("--cluster", help="local | slurm | serial.")]
DaskWorkersOpt = Annotated[int, typer.Option("--workers", help="Dask workers.")]


@dataclasses.dataclass(frozen=True)
class ConfigOptions:
    """What a command's shared config options said: --preset, --config, --set and its CONFIG_FLAGS flags."""

    preset: Optional[str]
    config: Optional[Path]
    set_: tuple[str, ...]
    flags: dict[str, Any]


def config_options(*names: str, preset: bool = True, files: bool = True,
                   config_help: str = "YAML/JSON config file (sections model/data/train; mma.yaml's keys).") -> Any:
    """Give a command --preset (with `preset`), --config and --set (with `files`) and the `CONFIG_FLAGS`
    options `names`; the command receives what they said as `options` (a ConfigOptions)."""
    config_opt = Annotated[Optional[Path], typer.Option("--config", help=config_help)]
    shared = ([("preset_name", PresetOpt)] if preset else []) + ([("config", config_opt), ("set_", SetOpt)] if files else [])

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "options"]
        flag_types = [(n, Annotated[Optional[CONFIG_FLAGS[n].type],
                                    typer.Option(CONFIG_FLAGS[n].option, help=CONFIG_FLAGS[n].help)]) for n in names]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
                 for n, a in shared + flag_types]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            options = ConfigOptions(kwargs.pop("preset_name", None), kwargs.pop("config", None),
                                    tuple(kwargs.pop("set_", None) or ()), {n: kwargs.pop(n) for n in names})
            return fn(*args, options=options, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _request(ctx: typer.Context, options: Optional[ConfigOptions] = None, *, dataset: Optional[str] = None,
             **flags: Any) -> ConfigRequest:
    """The ConfigRequest of a command: its shared options, extra dotted-key flags, the global --seed."""
    o = options or ConfigOptions(None, None, (), {})
    return ConfigRequest(preset=o.preset, config_file=o.config, set_overrides=o.set_, flags={**o.flags, **flags},
                         seed=_state(ctx).seed, dataset=dataset)


def _dataset(ctx: typer.Context, dataset: Optional[str]) -> str:
    state = _state(ctx)
    return stage_dataset(_request(ctx, dataset=dataset), state.project, state.workspace)


def _config(ctx: typer.Context, request: ConfigRequest, *, needs_dataset: bool = True) -> Any:
    state = _state(ctx)
    return resolve_stage_config(request, state.project, state.workspace, needs_dataset=needs_dataset)


@app.callback()
def main_callback(
    ctx: typer.Context,
    workdir: Annotated[Optional[Path], typer.Option(
        "--workdir", envvar="MMA_WORKDIR", help="Where every stage writes (default: mma.yaml's, else ./work).")] = None,
    manifests: Annotated[Optional[Path], typer.Option("--manifests", envvar="MMA_MANIFESTS", help=(
        "Folder of dataset manifests (default: mma.yaml's, else ./data_manifests)."))] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", envvar="MMA_CONFIG", help="Project file (default: ./mma.yaml when there is one).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (overrides the config's).")] = None,
) -> None:
    """MMA-DFER pipeline: synth/prep -> shard -> cache -> train -> eval/report/predict, sweeps, demo."""
    from pipeline.core.logs import setup_logging

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        _fail(f"--log-level {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR", 2)
    setup_logging(level)
    try:
        project = load_project(config)
    except USER_ERRORS as exc:
        _fail(str(exc).splitlines()[0], exc.exit_code)
    ctx.obj = State(project_workspace(project, workdir, manifests), seed, project)


@app.command()
@delegates
def synth(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    layout: Annotated[str, typer.Option("--layout", help="On-disk layout: mafw | dfew.")] = "mafw",
    clips_per_class: Annotated[int, typer.Option("--clips-per-class", help="Clips per class.")] = 5,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each clip in seconds.")] = 2.0,
    classes: Annotated[int, typer.Option("--classes", help="Number of classes (first K of the dataset's).")] = 4,
    with_faults: Annotated[bool, typer.Option("--with-faults", help="Add faulty clips real datasets contain.")] = False,
    published_ids: Annotated[bool, typer.Option(
        "--published-ids", help="Ids, labels and folds of clips of the published split.")] = False,
    force: ForceOpt = False,
) -> None:
    """Write a small labelled audio-visual dataset in the real MAFW (or DFEW) layout."""
    from pipeline.data.synth import make_synth_dataset

    seed = _state(ctx).seed
    emit(make_synth_dataset(out, layout=layout, clips_per_class=clips_per_class, seconds=seconds, classes=classes,
                            with_faults=with_faults, seed=1 if seed is None else seed, force=force,
                            published_ids=published_ids))


@app.command()
@delegates
def init(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="Folder holding your DFEW/MAFW copies (searched 2 levels down).")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing mma.yaml.")] = False,
) -> None:
    """Write a commented project file mma.yaml here for the datasets found under FOLDER."""
    from pipeline.data.project_init import write_project_file

    emit(write_project_file(folder, force=force))


@app.command()
@delegates
def check(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    root: Annotated[Optional[Path], typer.Option(
        "--root", help="Dataset root folder (default: mma.yaml's datasets.<name>.root).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Threads opening videos.")] = None,
) -> None:
    """Compare your copy with the published split: missing, unreadable, relabelled clips (exit 1), subsets."""
    from pipeline.data.check import check_dataset

    state, dataset = _state(ctx), _dataset(ctx, dataset)
    emit(check_dataset(dataset, dataset_root(dataset, root, state.project), state.workspace, workers=workers))


@app.command()
@delegates
@config_options("faces", "face_select", "audio_rate", "jpeg_quality", preset=False)
def prep(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="dfew | mafw | synth")],
    root: Annotated[Optional[Path], typer.Option(
        "--root", help="Dataset root folder, as distributed (default: mma.yaml's datasets.<name>.root).")] = None,
    workers: DaskWorkersOpt = 2,
    threads_per_worker: Annotated[int, typer.Option("--threads-per-worker", help="Threads per Dask worker.")] = 1,
    cluster: ClusterOpt = "local",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Process only the first K clips.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="MTCNN device (default: cuda if available).")] = None,
    slurm_queue: Annotated[Optional[str], typer.Option("--slurm-queue")] = None,
    slurm_walltime: Annotated[str, typer.Option("--slurm-walltime")] = "02:00:00",
    slurm_memory: Annotated[str, typer.Option("--slurm-memory")] = "16GB",
    slurm_gpus: Annotated[int, typer.Option("--slurm-gpus", help="GPUs per SLURM job.")] = 0,
    max_failed: Annotated[str, typer.Option(
        "--max-failed", help="Exit 1 when more than this share of the clips failed (1% or 0.01).")] = "1%",
    force: ForceOpt = False,
    no_space_check: NoSpaceCheckOpt = False,
    options: Optional[ConfigOptions] = None,
) -> None:
    """Manifests, face crops and log-mel spectrograms for every clip (Dask, resumable)."""
    from pipeline.prep.run import parse_max_failed, run_prep

    state = _state(ctx)
    cfg = _config(ctx, _request(ctx, options, dataset=dataset))
    emit(run_prep(dataset, dataset_root(dataset, root, state.project), state.workspace, cfg.data, workers=workers,
                  threads_per_worker=threads_per_worker, cluster=cluster, limit=limit, force=force, device=device,
                  slurm={"queue": slurm_queue, "walltime": slurm_walltime, "memory": slurm_memory, "gpus": slurm_gpus},
                  max_failed=parse_max_failed(max_failed), frames_per_clip=cfg.model.num_frames,
                  space_check=not no_space_check))


@app.command()
@delegates
@config_options("max_clips", "max_bytes", preset=False, files=False)
def shard(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    force: ForceOpt = False,
    no_space_check: NoSpaceCheckOpt = False,
    options: Optional[ConfigOptions] = None,
) -> None:
    """Pack prep results into WebDataset tar shards grouped by test fold."""
    from pipeline.store.shard import run_shard

    cfg = _config(ctx, _request(ctx, options, dataset=dataset))
    emit(run_shard(cfg.dataset, _state(ctx).workspace, cfg.data, force=force, space_check=not no_space_check))


@app.command()
@delegates
@config_options("image_size", "views", *ENCODER_FLAGS)
def cache(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    workers: DaskWorkersOpt = 2,
    cluster: ClusterOpt = "local",
    device: Annotated[Optional[str], typer.Option("--device", help="cpu | cuda (default: cuda if available).")] = None,
    force: ForceOpt = False,
    no_space_check: NoSpaceCheckOpt = False,
    options: Optional[ConfigOptions] = None,
) -> None:
    """Run the frozen patch embeddings (stage 1) over the shards into a zarr store."""
    from pipeline.store.cache import run_cache

    cfg = _config(ctx, _request(ctx, options, dataset=dataset))
    emit(run_cache(cfg, _state(ctx).workspace, workers=workers, device=device, force=force, cluster=cluster,
                   space_check=not no_space_check))


@app.command()
@delegates
@config_options("image_size", "epochs", "batch_size", "lr", *MODEL_FLAGS[1:], "source", "precision", "compile",
                   "checkpointing", "drop_last", "log_every", "workers", "seed", *ENCODER_FLAGS)
def train(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    fold: FoldOpt = ...,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name (default: the preset's).")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(
        "--run-dir", help="Default <workdir>/<dataset>/runs/<name>/seed<s>/fold<k>.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from last.pt in the run directory.")] = False,
    allow_partial: AllowPartialOpt = False,
    force: ForceOpt = False,
    options: Optional[ConfigOptions] = None,
) -> None:
    """Train one fold (stage 2) from shards or the cache, then evaluate it. Under `torchrun --nproc-per-node N`
    it trains with DDP: --batch-size stays the global batch (split over the N ranks), the lr is unchanged."""
    from pipeline.engine.train import train_fold

    cfg = _config(ctx, _request(ctx, options, dataset=dataset, fold=fold, name=name))
    emit(train_fold(cfg, _state(ctx).workspace, run_dir=run_dir, resume=resume, force=force,
                    allow_partial=allow_partial))


@app.command("eval")
@delegates
@config_options("image_size", "source", "seed", *ENCODER_FLAGS)
def eval_(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    fold: FoldOpt = ...,
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="last.pt of a run, or the authors' file (default: the fold's run).")] = None,
    official: Annotated[bool, typer.Option("--official", help="Checkpoint is in the authors' layout.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for predictions and metrics.")] = None,
    allow_partial: AllowPartialOpt = False,
    options: Optional[ConfigOptions] = None,
) -> None:
    """Evaluate a checkpoint on a fold's test clips: UAR/WAR (1- and 2-clip), confusion matrix."""
    from pipeline.engine.evaluate import evaluate_checkpoint

    cfg = _config(ctx, _request(ctx, options, dataset=dataset, fold=fold))
    emit(evaluate_checkpoint(cfg, _state(ctx).workspace, checkpoint, official=official, out_dir=out,
                             allow_partial=allow_partial))


@app.command()
@delegates
def report(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    allow_partial: AllowPartialOpt = False,
    runs: Annotated[Optional[Path], typer.Option(
        "--runs", help="Folder holding fold1..fold5 run dirs (or seed<s>/ folders of them).")] = None,
    mixed: MixedOpt = False,
    bootstrap: BootstrapOpt = DEFAULT_RESAMPLES,
) -> None:
    """Average the 5 folds (and seeds) into the paper's table with the spread and 95% intervals; flags missing folds."""
    from pipeline.results.report import make_report

    emit(make_report(_dataset(ctx, dataset), _state(ctx).workspace, runs_dir=runs, allow_partial=allow_partial,
                     mixed=mixed, bootstrap=bootstrap))


@app.command()
@delegates
def predict(
    ctx: typer.Context,
    videos: Annotated[List[Path], typer.Argument(help="Video files or folders (searched recursively).")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="last.pt of a run, or the authors' file.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Write <stem>/ per video (CSV, JSON, PNG, MP4, HTML) and predictions.csv here.")] = None,
    window: Annotated[Optional[float], typer.Option("--window", help="Window length in seconds (default 2); also prints the per-window table.")] = None,
    stride: Annotated[Optional[float], typer.Option("--stride", help="Seconds between window starts (default 1, at most --window).")] = None,
    official: Annotated[bool, typer.Option("--official", help="Checkpoint is in the authors' layout.")] = False,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Label set (default: the checkpoint's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (summary + windows per video).")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu | cuda.")] = None,
    image_size: Annotated[Optional[int], typer.Option(
        "--image-size", help="S of an --official checkpoint (default: the paper preset's).")] = None,
    detect_side: Annotated[int, typer.Option(
        "--detect-side", help="Longer side (px) of the frames MTCNN sees; raise it for small faces.")] = 320,
    force: ForceOpt = False,
) -> None:
    """Emotion over time in your own videos: sliding windows, and with --out a timeline, an annotated video, a page."""
    from pipeline.results.predict import predict_videos

    emit(predict_videos(videos, checkpoint, official=official, dataset=dataset, window=window, stride=stride, out=out,
                        force=force, device=device, workspace=_state(ctx).workspace, image_size=image_size,
                        detect_side=detect_side), as_json)


@app.command(context_settings={"allow_extra_args": False})
@delegates
@config_options("source", *SWEEP_FLAGS, config_help="YAML/JSON config (model/data/train, and sweep: SLURM options).")
def sweep(
    ctx: typer.Context,
    target: Annotated[Optional[List[str]], typer.Argument(help="PRESET | status [PRESET] | report PRESET")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the paper's experiment presets.")] = False,
    dataset: Annotated[Optional[str], typer.Option(
        "--dataset", help="dfew | mafw | synth (default: mma.yaml's, else the only one prepared).")] = None,
    folds: Annotated[Optional[str], typer.Option("--folds", help="Comma-separated folds (default: the preset's).")] = None,
    seeds: Annotated[Optional[str], typer.Option(
        "--seeds", help="Comma-separated training seeds: rows x folds x seeds (default: the global --seed, else 1).")] = None,
    rows: Annotated[Optional[str], typer.Option("--rows", help="Only these rows of the preset (comma-separated keys).")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local | slurm.")] = "local",
    force: Annotated[bool, typer.Option("--force", help="Retrain finished jobs too.")] = False,
    allow_partial: AllowPartialOpt = False,
    mixed: MixedOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Expand and print jobs; submit nothing.")] = False,
    bootstrap: BootstrapOpt = DEFAULT_RESAMPLES,
    against: Annotated[Optional[str], typer.Option(
        "--against", help="`report`: compare every row with this row (default: the paper's final model).")] = None,
    options: Optional[ConfigOptions] = None,
) -> None:
    """Fold x ablation sweeps through submitit (local or SLURM); `status` and `report` follow them."""
    from pipeline.experiments.sweep import sweep_command, sweep_list

    state = _state(ctx)
    if list_:  # needs no dataset
        emit(sweep_list(dataset or state.project.dataset or "dfew"))
        return
    request = _request(ctx, options, dataset=dataset)
    emit(sweep_command(target or [], request=request, project=state.project, workspace=state.workspace, folds=folds,
                       rows=rows, executor=executor, force=force, dry_run=dry_run, allow_partial=allow_partial,
                       mixed=mixed, seeds=seeds, bootstrap=bootstrap, against=against))


@app.command()
@delegates
def demo(
    ctx: typer.Context,
    folds: Annotated[str, typer.Option("--folds", help="Folds to train (comma-separated).")] = "1",
    clips_per_class: Annotated[Optional[int], typer.Option(
        "--clips-per-class", help="Synth clips per class [demo default: 16].")] = None,
    seconds: Annotated[Optional[float], typer.Option("--seconds", help="Synth clip length [demo default: 2].")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs [the tiny preset's].")] = None,
    force: ForceOpt = False,
) -> None:
    """One command, nothing to download: synth -> prep -> shard -> cache -> train -> eval -> report."""
    from pipeline.demo import run_demo

    sizes = {k: v for k, v in {"clips_per_class": clips_per_class, "seconds": seconds, "epochs": epochs}.items()
             if v is not None}
    emit(run_demo(_state(ctx).workspace, folds=folds, force=force, **sizes))


@model_app.command("summary")
@delegates
@config_options(*MODEL_FLAGS)
def model_summary(
    ctx: typer.Context,
    dataset: Annotated[
        Optional[str],
        typer.Option("--dataset", help="dfew | mafw, sets the class count (default: mma.yaml's, the only one prepared, else dfew)."),
    ] = None,
    as_json: JsonOpt = False,
    options: Optional[ConfigOptions] = None,
) -> None:
    """Parameters per component (trainable / frozen) and totals."""
    from pipeline.engine.model_summary import summarize_run, summary_dataset

    state = _state(ctx)
    request = _request(ctx, options, dataset=dataset)
    cfg = _config(ctx, request, needs_dataset=False)
    emit(summarize_run(cfg, summary_dataset(request, state.project, state.workspace), state.workspace), as_json)


@model_app.command("import-official")
@delegates
def model_import_official(
    ctx: typer.Context,
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint trained with the authors' code.")],
    dataset: Annotated[str, typer.Option("--dataset", help="dfew | mafw.")],
    image_size: Annotated[int, typer.Option("--image-size", help="S the checkpoint was trained at.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the mma checkpoint.")],
    preset_name: Annotated[str, typer.Option(
        "--preset", help="Encoder geometry preset (paper = ViT-B, the authors').")] = "paper",
    force: ForceOpt = False,
) -> None:
    """Convert a checkpoint in the authors' layout into an mma checkpoint."""
    from pipeline.engine.official import import_official

    emit(import_official(ckpt, dataset=dataset, image_size=image_size, out=out, preset=preset_name, force=force))


WeightsDirOpt = Annotated[Optional[Path], typer.Option(
    "--dir", help="Weights folder (default: weights_dir of the project, <workdir>/weights).")]
GeometryOpt = Annotated[str, typer.Option(
    "--preset", help="Encoder geometry the files must have: paper (each encoder's architecture at full size; "
                     "MAE-Face and AudioMAE: ViT-B/16) | tiny.")]


@weights_app.command("list")
@delegates
def weights_list(
    ctx: typer.Context,
    folder: WeightsDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each known checkpoint: what it is, source, licence, expected file name, present or not."""
    from pipeline.weights.store import listing

    emit(listing(folder or _state(ctx).workspace.weights), as_json)


@weights_app.command("fetch")
@delegates
def weights_fetch(
    ctx: typer.Context,
    names: Annotated[List[str], typer.Argument(help="Names from `mma weights list`.")],
    folder: WeightsDirOpt = None,
    preset_name: GeometryOpt = "paper",
    force: Annotated[bool, typer.Option("--force", help="Download again even if present.")] = False,
) -> None:
    """Download checkpoints a plain HTTPS request can get; for the others print the link and the `add` command.

    Exit code 0 when every name is present, fetched, or needs a browser (its steps printed);
    1 when a download failed (the others are still tried); 2 for an unknown name.
    """
    from pipeline.weights.fetch import fetch_all

    emit(fetch_all(names, folder or _state(ctx).workspace.weights, force=force, preset_name=preset_name))


@weights_app.command("add")
@delegates
def weights_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name from `mma weights list`.")],
    file: Annotated[Path, typer.Argument(help="The file you downloaded.")],
    folder: WeightsDirOpt = None,
    preset_name: GeometryOpt = "paper",
    link: Annotated[bool, typer.Option("--link", help="Symlink the file instead of copying it.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a different file already registered.")] = False,
) -> None:
    """Register a checkpoint you downloaded: structure check, copy into the weights folder, sha256 recorded."""
    from pipeline.weights.store import add

    emit(add(name, file, folder or _state(ctx).workspace.weights, force=force, link=link, preset_name=preset_name))


@weights_app.command("check")
@delegates
def weights_check(
    file: Annotated[Path, typer.Argument(help="A checkpoint file.")],
    as_: Annotated[Optional[str], typer.Option("--as", help="What it must be: vision | audio | mma | authors.")] = None,
    preset_name: GeometryOpt = "paper",
    encoder: Annotated[Optional[str], typer.Option(
        "--encoder", help="The timm name (ARCH.TAG) an encoder file must fit (default: the preset's encoder).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Say what a checkpoint file is (encoder geometry, family, MAE leftovers, kind); with --as, fail unless it fits."""
    from pipeline.weights.check import check_weights_file

    emit(check_weights_file(file, as_=as_, preset_name=preset_name, encoder=encoder), as_json)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
