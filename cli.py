"""The `mma` command line: parses arguments and delegates to `pipeline/` and `model/`.

Nothing here does work of its own. Each command resolves its configuration, calls one
function, and prints what it returns. The project's own errors (`MMAError`, `ModelError`: a bad
path, file, config value) become a one-line `error: ...` on stderr and their exit code (2, or 1
for a refused result); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from typing_extensions import Annotated

from model.config import TOKENS_PER_INTRODUCTION
from pipeline.core.errors import USER_ERRORS, MMAError
from pipeline.core.paths import Workspace
from pipeline.core.project import ProjectFile

app = typer.Typer(
    name="mma",
    help="MMA-DFER: audio-visual dynamic facial expression recognition, stage by stage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Inspect and convert MMA-DFER models.", no_args_is_help=True)
app.add_typer(model_app, name="model")
weights_app = typer.Typer(
    help="The checkpoints the method needs: list, fetch, add (register a downloaded file), check.",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")

log = logging.getLogger("mma")


@dataclass
class State:
    """Global options shared by every command."""

    workspace: Workspace
    seed: Optional[int]
    log_level: str
    project: ProjectFile = dataclasses.field(default_factory=ProjectFile)


def _state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if obj is None:  # invoked without the callback (not through `mma`)
        obj = State(Workspace.from_env(), None, "INFO")
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


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


# --------------------------------------------------------------------------- shared options

PresetOpt = Annotated[
    Optional[str], typer.Option("--preset", help="Model/training preset: paper | tiny (default: mma.yaml's, else paper).")
]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", help="YAML/JSON config file (sections model/data/train; mma.yaml's keys).")
]
DatasetArg = Annotated[
    Optional[str],
    typer.Argument(help="dfew | mafw | synth (default: mma.yaml's `dataset`, else the only one prepared).", show_default=False),
]
SetOpt = Annotated[
    Optional[List[str]], typer.Option("--set", help="Override any field: section.field=value (repeatable).")
]
ImageSizeOpt = Annotated[Optional[int], typer.Option("--image-size", help="Face crop size S (112/160/224).")]
LatentOpt = Annotated[Optional[int], typer.Option("--latent-dim", help="Fusion bottleneck width d.")]
FusionOpt = Annotated[Optional[str], typer.Option("--fusion", help="bottleneck | add | mult | mult-concat | none.")]
TemporalOpt = Annotated[Optional[str], typer.Option("--temporal", help="mtt | ita | both | none.")]
ItaDimOpt = Annotated[Optional[int], typer.Option("--ita-dim", help="Width of intermediate temporal adaptors.")]
PromptsOpt = Annotated[Optional[str], typer.Option("--prompts", help="none | static | progressive.")]
PromptIntroOpt = Annotated[
    Optional[int], typer.Option("--prompt-introductions",
                                help="Progressive prompts: times new prompts enter (3 tokens each, as the authors').")
]
ModalityOpt = Annotated[Optional[str], typer.Option("--modality", help="both | vision | audio.")]
VisionCkptOpt = Annotated[Optional[Path], typer.Option("--vision-ckpt", help="MAE-Face checkpoint ({'model': ...}).")]
AudioCkptOpt = Annotated[Optional[Path], typer.Option("--audio-ckpt", help="AudioMAE checkpoint ({'model': ...}).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo finished work instead of skipping it.")]
AllowPartialOpt = Annotated[bool, typer.Option(
    "--allow-partial", help="Write/average a result although some test clips could not be read (marked partial).")]
MixedOpt = Annotated[bool, typer.Option(
    "--mixed", help="Average folds whose data or model provenance (or training source) differ.")]


def _stage_config(config_file: Optional[Path]) -> ProjectFile:
    from pipeline.core.project import load_stage_config

    return load_stage_config(config_file) if config_file is not None else ProjectFile()


def _preset(ctx: typer.Context, preset_name: Optional[str], config_file: Optional[Path]) -> str:
    """--preset, else the --config file's `preset`, else the project file's, else paper."""
    return preset_name or _stage_config(config_file).preset or _state(ctx).project.preset or "paper"


def _dataset(ctx: typer.Context, dataset: Optional[str], config_file: Optional[Path] = None) -> str:
    """Named, else the --config file's `dataset`, else mma.yaml's, else the only one prepared (one-line error)."""
    from pipeline.core.project import resolve_dataset

    state = _state(ctx)
    return resolve_dataset(dataset or _stage_config(config_file).dataset, state.project, state.workspace)


def _run_config(
    ctx: typer.Context,
    preset_name: Optional[str],
    config_file: Optional[Path],
    set_overrides: Optional[List[str]],
    dataset: Optional[str] = None,
    **flags: Any,
) -> Any:
    """Resolve preset < mma.yaml < --config file < --set < explicit flags; the global --seed wins for train.seed."""
    from pipeline.core.config import resolve_config

    overrides = {k: v for k, v in flags.items() if v is not None}
    for item in set_overrides or []:  # a key the user --set wins over a value a flag only implies
        if item.split("=", 1)[0].strip() == "model.num_prompts":
            overrides.pop("model.num_prompts", None)
    seed = _state(ctx).seed
    if seed is not None:
        overrides["train.seed"] = seed
    if dataset is not None:
        overrides["dataset"] = dataset
    layers = [_state(ctx).project.config_layer(), _stage_config(config_file).config_layer()]
    return resolve_config(_preset(ctx, preset_name, config_file), None, overrides, set_overrides, layers=layers)


def _model_flags(
    image_size: Optional[int],
    latent_dim: Optional[int],
    fusion: Optional[str],
    temporal: Optional[str],
    ita_dim: Optional[int],
    prompts: Optional[str],
    prompt_introductions: Optional[int],
    modality: Optional[str],
) -> dict[str, Any]:
    return {
        "model.image_size": image_size,
        "model.latent_dim": latent_dim,
        "model.fusion": fusion,
        "model.temporal": temporal,
        "model.ita_dim": ita_dim,
        "model.prompts": prompts,
        "model.prompt_introductions": prompt_introductions,
        # as in the authors' code, each introduction brings 3 tokens (--set model.num_prompts=K overrides)
        "model.num_prompts": TOKENS_PER_INTRODUCTION * prompt_introductions if prompt_introductions else None,
        "model.modality": modality,
    }


# --------------------------------------------------------------------------- global options


@app.callback()
def main_callback(
    ctx: typer.Context,
    workdir: Annotated[
        Optional[Path],
        typer.Option("--workdir", envvar="MMA_WORKDIR", help="Where every stage writes (default: mma.yaml's, else ./work)."),
    ] = None,
    manifests: Annotated[
        Optional[Path],
        typer.Option("--manifests", envvar="MMA_MANIFESTS",
                     help="Folder of dataset manifests (default: mma.yaml's, else ./data_manifests)."),
    ] = None,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", envvar="MMA_CONFIG", help="Project file (default: ./mma.yaml when there is one)."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (overrides the config's).")] = None,
) -> None:
    """MMA-DFER pipeline: synth/prep -> shard -> cache -> train -> eval/report/predict, sweeps, demo."""
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        _fail(f"--log-level {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR", 2)
    from pipeline.core.logs import setup_logging

    setup_logging(level)
    from pipeline.core.project import load_project, project_workspace

    try:
        project = load_project(config)
    except USER_ERRORS as exc:
        _fail(str(exc).splitlines()[0], exc.exit_code)
    ctx.obj = State(project_workspace(project, workdir, manifests), seed, log_level.upper(), project)


# --------------------------------------------------------------------------- data stages


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
    published_ids: Annotated[
        bool, typer.Option("--published-ids", help="Ids, labels and folds of clips of the published split.")
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Write a small labelled audio-visual dataset in the real MAFW (or DFEW) layout."""
    from pipeline.data.synth import make_synth_dataset as make
    seed = _state(ctx).seed
    summary = make(
        out,
        layout=layout,
        clips_per_class=clips_per_class,
        seconds=seconds,
        classes=classes,
        with_faults=with_faults,
        seed=1 if seed is None else seed,
        force=force,
        published_ids=published_ids,
    )
    _print_json(summary)


@app.command()
@delegates
def init(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="Folder holding your DFEW/MAFW copies (searched 2 levels down).")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing mma.yaml.")] = False,
) -> None:
    """Write a commented project file mma.yaml here for the datasets found under FOLDER."""
    from pipeline.data.project_init import write_project_file

    out = write_project_file(folder, force=force)
    typer.echo(f"wrote {out['project_file']}")
    for name, root in out["datasets"].items():
        typer.echo(f"  {name}: {root}")
    if not out["datasets"]:
        typer.echo(f"no DFEW or MAFW root found under {folder}: set datasets: in {out['project_file']}")
    else:
        first = out["dataset"] or next(iter(out["datasets"]))
        typer.echo(f"next: mma check {first}, then mma prep {first}")


@app.command()
@delegates
def check(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    root: Annotated[
        Optional[Path], typer.Option("--root", help="Dataset root folder (default: mma.yaml's datasets.<name>.root).")
    ] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Threads opening videos.")] = None,
) -> None:
    """Compare your copy with the published split: missing, unreadable, relabelled clips (exit 1), subsets."""
    from rich.console import Console

    from pipeline.core.project import dataset_root
    from pipeline.data.check import check_dataset, check_table

    state = _state(ctx)
    dataset = _dataset(ctx, dataset)
    result = check_dataset(dataset, dataset_root(dataset, root, state.project), state.workspace, workers=workers)
    Console().print(check_table(result))
    typer.echo(result["summary"])
    typer.echo(f"written: {state.workspace.dataset_dir(dataset) / 'check.json'}")
    if not result["ok"]:
        raise typer.Exit(1)


@app.command()
@delegates
def prep(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="dfew | mafw | synth")],
    root: Annotated[
        Optional[Path], typer.Option("--root", help="Dataset root folder, as distributed (default: mma.yaml's datasets.<name>.root).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Dask workers.")] = 2,
    threads_per_worker: Annotated[int, typer.Option("--threads-per-worker", help="Threads per Dask worker.")] = 1,
    cluster: Annotated[str, typer.Option("--cluster", help="local | slurm | serial.")] = "local",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Process only the first K clips.")] = None,
    faces: Annotated[Optional[str], typer.Option("--faces", help="detect | official (DFEW frames); default: data.compat decides.")] = None,
    face_select: Annotated[Optional[str], typer.Option("--face-select", help="track | union (authors'); default: data.compat decides.")] = None,
    audio_rate: Annotated[Optional[str], typer.Option("--audio-rate", help="16k | native (authors'); default: data.compat decides.")] = None,
    jpeg_quality: Annotated[Optional[int], typer.Option("--jpeg-quality", help="JPEG quality of crops.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="MTCNN device (default: cuda if available).")] = None,
    slurm_queue: Annotated[Optional[str], typer.Option("--slurm-queue")] = None,
    slurm_walltime: Annotated[str, typer.Option("--slurm-walltime")] = "02:00:00",
    slurm_memory: Annotated[str, typer.Option("--slurm-memory")] = "16GB",
    slurm_gpus: Annotated[int, typer.Option("--slurm-gpus", help="GPUs per SLURM job.")] = 0,
    max_failed: Annotated[str, typer.Option(
        "--max-failed", help="Exit 1 when more than this share of the clips failed (1% or 0.01).")] = "1%",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Manifests, face crops and log-mel spectrograms for every clip (Dask, resumable)."""
    from pipeline.core.project import dataset_root
    from pipeline.prep.run import parse_max_failed, run_prep

    root = dataset_root(dataset, root, _state(ctx).project)
    cfg = _run_config(
        ctx,
        None,
        config,
        set_,
        dataset=dataset,
        **{
            "data.faces": faces,
            "data.face_select": face_select,
            "data.audio_rate": audio_rate,
            "data.jpeg_quality": jpeg_quality,
        },
    )
    summary = run_prep(
        dataset,
        root,
        _state(ctx).workspace,
        cfg.data,
        workers=workers,
        threads_per_worker=threads_per_worker,
        cluster=cluster,
        limit=limit,
        force=force,
        device=device,
        slurm={"queue": slurm_queue, "walltime": slurm_walltime, "memory": slurm_memory, "gpus": slurm_gpus},
        max_failed=parse_max_failed(max_failed),
    )
    from rich.console import Console

    from pipeline.prep.run import summary_table

    Console().print(summary_table(summary))
    if summary.get("clips_failed"):
        typer.echo(f"{summary['clips_failed']} clip(s) failed: see {Path(summary['prep_dir']) / 'failures.jsonl'}", err=True)
    if summary.get("too_many_failed"):
        typer.echo(f"error: {summary['clips_failed']} of {summary['clips_total']} clips failed "
                   f"({100 * summary['failed_fraction']:.1f}% > --max-failed {100 * summary['max_failed']:g}%)", err=True)
        raise typer.Exit(1)


@app.command()
@delegates
def shard(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    max_clips: Annotated[Optional[int], typer.Option("--max-clips", help="Clips per shard at most.")] = None,
    max_bytes: Annotated[Optional[int], typer.Option("--max-bytes", help="Bytes per shard at most.")] = None,
    force: ForceOpt = False,
) -> None:
    """Pack prep results into WebDataset tar shards grouped by test fold."""
    from pipeline.store.shard import run_shard
    dataset = _dataset(ctx, dataset)
    cfg = _run_config(
        ctx, None, None, None, dataset=dataset, **{"data.shard_max_clips": max_clips, "data.shard_max_bytes": max_bytes}
    )
    index = run_shard(dataset, _state(ctx).workspace, cfg.data, force=force)
    folds = {k: v["clips"] for k, v in index["folds"].items()}
    _print_json({"shards": len(index["shards"]), "written": index["written"], "kept": index["kept"],
                 "clips": index["clips_sharded"], "clips_per_fold": folds, "left_out": index["excluded"],
                 "prep_hash": index["prep_hash"], "seconds": index["seconds"]})


@app.command()
@delegates
def cache(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    preset_name: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    image_size: ImageSizeOpt = None,
    views: Annotated[Optional[int], typer.Option("--views", help="Pre-augmented views per training clip.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Dask workers.")] = 2,
    cluster: Annotated[str, typer.Option("--cluster", help="local | slurm | serial.")] = "local",
    vision_ckpt: VisionCkptOpt = None,
    audio_ckpt: AudioCkptOpt = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu | cuda (default: cuda if available).")] = None,
    force: ForceOpt = False,
) -> None:
    """Run the frozen patch embeddings (stage 1) over the shards into a zarr store."""
    cfg = _run_config(
        ctx,
        preset_name,
        config,
        set_,
        dataset=_dataset(ctx, dataset, config),
        **{
            "model.image_size": image_size,
            "data.cache_views": views,
            "vision_ckpt": str(vision_ckpt) if vision_ckpt else None,
            "audio_ckpt": str(audio_ckpt) if audio_ckpt else None,
        },
    )
    from pipeline.store.cache import run_cache
    summary = run_cache(cfg, _state(ctx).workspace, workers=workers, device=device, force=force, cluster=cluster)
    _print_json(summary)
    if not summary.get("complete", True):
        failed = summary.get("failed_shards") or []
        names = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        typer.echo(f"error: cache unfinished: {len(failed)} shard(s) failed ({names or 'see the log'}); "
                   "rerun `mma cache` to retry them", err=True)
        raise typer.Exit(1)


# --------------------------------------------------------------------------- training and after


@app.command()
@delegates
def train(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    fold: Annotated[int, typer.Option("--fold", min=1, max=5, help="Test fold k (1..5).")] = ...,
    preset_name: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    image_size: ImageSizeOpt = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr")] = None,
    latent_dim: LatentOpt = None,
    fusion: FusionOpt = None,
    temporal: TemporalOpt = None,
    ita_dim: ItaDimOpt = None,
    prompts: PromptsOpt = None,
    prompt_introductions: PromptIntroOpt = None,
    modality: ModalityOpt = None,
    source: Annotated[Optional[str], typer.Option("--from", help="shards | cache.")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="auto (fp32 under data.compat=authors, else bf16 on GPU) | bf16 | fp32.")] = None,
    compile_: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader workers.")] = None,
    vision_ckpt: VisionCkptOpt = None,
    audio_ckpt: AudioCkptOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name (default: the preset's).")] = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Default <workdir>/<dataset>/runs/<name>/fold<k>.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from last.pt in the run directory.")] = False,
    allow_partial: AllowPartialOpt = False,
    force: ForceOpt = False,
) -> None:
    """Train one fold (stage 2) from shards or the cache, then evaluate it."""
    cfg = _run_config(
        ctx,
        preset_name,
        config,
        set_,
        dataset=_dataset(ctx, dataset, config),
        fold=fold,
        name=name,
        vision_ckpt=str(vision_ckpt) if vision_ckpt else None,
        audio_ckpt=str(audio_ckpt) if audio_ckpt else None,
        **_model_flags(image_size, latent_dim, fusion, temporal, ita_dim, prompts, prompt_introductions, modality),
        **{
            "train.epochs": epochs,
            "train.batch_size": batch_size,
            "train.lr": lr,
            "train.source": source,
            "train.precision": precision,
            "train.compile": compile_,
            "data.num_workers": workers,
        },
    )
    from pipeline.engine.train import train_fold
    result = train_fold(cfg, _state(ctx).workspace, run_dir=run_dir, resume=resume, force=force,
                        allow_partial=allow_partial)
    _print_json({k: result[k] for k in ("uar", "war", "uar_2clip", "war_2clip", "fold") if k in result})


@app.command("eval")
@delegates
def eval_(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    fold: Annotated[int, typer.Option("--fold", min=1, max=5, help="Test fold k (1..5).")] = ...,
    checkpoint: Annotated[
        Optional[Path], typer.Option("--checkpoint", help="last.pt of a run, or the authors' file (default: the fold's run).")
    ] = None,
    official: Annotated[bool, typer.Option("--official", help="Checkpoint is in the authors' layout.")] = False,
    preset_name: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    image_size: ImageSizeOpt = None,
    source: Annotated[Optional[str], typer.Option("--from", help="shards | cache.")] = None,
    vision_ckpt: VisionCkptOpt = None,
    audio_ckpt: AudioCkptOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for predictions and metrics.")] = None,
    allow_partial: AllowPartialOpt = False,
) -> None:
    """Evaluate a checkpoint on a fold's test clips: UAR/WAR (1- and 2-clip), confusion matrix."""
    cfg = _run_config(
        ctx,
        preset_name,
        config,
        set_,
        dataset=_dataset(ctx, dataset, config),
        fold=fold,
        vision_ckpt=str(vision_ckpt) if vision_ckpt else None,
        audio_ckpt=str(audio_ckpt) if audio_ckpt else None,
        **{"model.image_size": image_size, "train.source": source},
    )
    from pipeline.engine.evaluate import evaluate_checkpoint as evaluate
    if checkpoint is None:
        checkpoint = _state(ctx).workspace.run_dir(cfg.dataset, cfg.name, cfg.fold) / "last.pt"
        if not checkpoint.is_file():
            raise MMAError(f"{checkpoint}: no checkpoint for fold {cfg.fold}; train it with "
                           f"`mma train {cfg.dataset} --fold {cfg.fold}` or pass --checkpoint")
    result = evaluate(cfg, _state(ctx).workspace, checkpoint, official=official, out_dir=out,
                      allow_partial=allow_partial)
    _print_json({k: result[k] for k in ("uar", "war", "uar_2clip", "war_2clip", "fold") if k in result})


@app.command()
@delegates
def report(
    ctx: typer.Context,
    dataset: DatasetArg = None,
    runs: Annotated[Optional[Path], typer.Option("--runs", help="Folder holding fold1..fold5 run dirs.")] = None,
    allow_partial: AllowPartialOpt = False,
    mixed: MixedOpt = False,
) -> None:
    """Average the 5 folds into the paper's table (markdown + csv); flags missing folds."""
    from pipeline.results.report import make_report

    table = make_report(_dataset(ctx, dataset), _state(ctx).workspace, runs_dir=runs, allow_partial=allow_partial,
                        mixed=mixed)
    typer.echo(table["markdown"])
    if table["refused"]:
        for reason in table["refused"]:
            typer.echo(f"error: {reason}", err=True)
        raise typer.Exit(1)


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
    image_size: Annotated[
        Optional[int], typer.Option("--image-size", help="S of an --official checkpoint (default 160).")
    ] = None,
    detect_side: Annotated[int, typer.Option(
        "--detect-side", help="Longer side (px) of the frames MTCNN sees; raise it for small faces.")] = 320,
    force: ForceOpt = False,
) -> None:
    """Emotion over time in your own videos: sliding windows, and with --out a timeline, an annotated video, a page."""
    from pipeline.results.predict import predict_videos
    result = predict_videos(
        videos, checkpoint, official=official, dataset=dataset, window=window, stride=stride, out=out, force=force,
        as_json=as_json, device=device, workspace=_state(ctx).workspace, image_size=image_size,
        detect_side=detect_side,
    )
    typer.echo(result["text"])
    if result["failed"]:
        failed = [v["video"] for v in result["videos"] if "error" in v]
        typer.echo(f"error: {len(failed)} of {len(result['videos'])} failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


# --------------------------------------------------------------------------- sweeps and demo


@app.command(context_settings={"allow_extra_args": False})
@delegates
def sweep(
    ctx: typer.Context,
    target: Annotated[Optional[List[str]], typer.Argument(help="PRESET | status [PRESET] | report PRESET")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the paper's experiment presets.")] = False,
    dataset: Annotated[
        Optional[str], typer.Option("--dataset", help="dfew | mafw | synth (default: mma.yaml's, else the only one prepared).")
    ] = None,
    folds: Annotated[Optional[str], typer.Option("--folds", help="Comma-separated folds (default: the preset's).")] = None,
    rows: Annotated[Optional[str], typer.Option("--rows", help="Only these rows of the preset (comma-separated keys).")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local | slurm.")] = "local",
    preset_name: PresetOpt = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="YAML/JSON config (model/data/train, and sweep: SLURM options).")
    ] = None,
    set_: SetOpt = None,
    source: Annotated[Optional[str], typer.Option("--from", help="shards | cache.")] = None,
    partition: Annotated[Optional[str], typer.Option("--partition", help="SLURM partition.")] = None,
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="GPUs per job [1].")] = None,
    cpus: Annotated[Optional[int], typer.Option("--cpus", help="CPUs per job [8].")] = None,
    mem_gb: Annotated[Optional[int], typer.Option("--mem-gb", help="Memory per job in GB [64].")] = None,
    time_min: Annotated[Optional[int], typer.Option("--time", help="Minutes per job before requeue [600].")] = None,
    array_parallelism: Annotated[
        Optional[int], typer.Option("--array-parallelism", help="Array tasks running at once [16].")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain finished jobs too.")] = False,
    allow_partial: AllowPartialOpt = False,
    mixed: MixedOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Expand and print jobs; submit nothing.")] = False,
) -> None:
    """Fold x ablation sweeps through submitit (local or SLURM); `status` and `report` follow them."""
    from pipeline.experiments import sweep as sweeps

    ws = _state(ctx).workspace
    if list_:  # needs no dataset
        typer.echo(sweeps.format_list(dataset or _state(ctx).project.dataset or "dfew"))
        return
    dataset = _dataset(ctx, dataset, config)
    preset_given = bool(preset_name or _stage_config(config).preset or _state(ctx).project.preset)
    preset_name = _preset(ctx, preset_name, config)
    verb, args = (target[0], target[1:]) if target else (None, [])
    if verb is None:
        raise MMAError(f"mma sweep: give PRESET ({', '.join(sweeps.EXPERIMENTS)}), `status [PRESET]` or "
                       "`report PRESET`")
    if verb == "status":
        if len(args) > 1:
            raise MMAError("mma sweep status [PRESET]: at most one preset")
        sid = sweeps.resolve_sweep_id(ws, dataset, args[0], preset_name, preset_given) if args else None
        typer.echo(sweeps.format_status(sweeps.sweep_status(ws, dataset, sid)))
        return
    if verb == "report":
        if len(args) != 1:
            raise MMAError("mma sweep report PRESET: name one preset")
        sid = sweeps.resolve_sweep_id(ws, dataset, args[0], preset_name, preset_given)
        report = sweeps.sweep_report(ws, dataset, args[0], preset_name=sweeps.sweep_preset(ws, dataset, sid, preset_name),
                                     allow_partial=allow_partial, mixed=mixed)
        typer.echo(report["markdown"] + "\n" + "\n".join(f"wrote {f}" for f in report["files"]))
        for reason in report["refused"]:
            typer.echo(f"error: {reason}", err=True)
        if report["refused"]:
            raise typer.Exit(1)
        return
    if args:
        raise MMAError(f"mma sweep: unexpected arguments after {verb!r}: {' '.join(args)}")
    base_config = _run_config(ctx, preset_name, config, set_, dataset=dataset, **{"train.source": source})
    layers = (_state(ctx).project, _stage_config(config))  # mma.yaml's sweep:, then --config's
    section = sweeps.sweep_section([(layer.path, layer.sweep) for layer in layers])
    out = sweeps.run_sweep(
        verb,
        dataset=dataset,
        folds=folds,
        executor=executor,
        base_config=base_config,
        preset_name=preset_name,
        workspace=ws,
        slurm={
            "partition": partition,
            "gpus": gpus,
            "cpus": cpus,
            "mem_gb": mem_gb,
            "time_min": time_min,
            "array_parallelism": array_parallelism,
        },
        sweep_section=section,
        rows=rows,
        force=force,
        dry_run=dry_run,
    )
    typer.echo(out["text"])
    if out.get("failed"):
        raise typer.Exit(1)


@app.command()
@delegates
def demo(
    ctx: typer.Context,
    folds: Annotated[str, typer.Option("--folds", help="Folds to train (comma-separated).")] = "1",
    clips_per_class: Annotated[
        Optional[int], typer.Option("--clips-per-class", help="Synth clips per class [demo default: 16].")
    ] = None,
    seconds: Annotated[Optional[float], typer.Option("--seconds", help="Synth clip length [demo default: 2].")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs [the tiny preset's].")] = None,
    force: ForceOpt = False,
) -> None:
    """One command, nothing to download: synth -> prep -> shard -> cache -> train -> eval -> report."""
    from pipeline.demo import run_demo
    try:
        fold_list = [int(f) for f in folds.split(",") if f.strip()]
    except ValueError:
        raise MMAError(f"--folds {folds!r}: give comma-separated fold numbers (1..5)") from None
    sizes = {"clips_per_class": clips_per_class, "seconds": seconds, "epochs": epochs}
    sizes = {k: v for k, v in sizes.items() if v is not None}
    out = run_demo(_state(ctx).workspace, folds=fold_list, force=force, **sizes)
    typer.echo(out["text"])


# --------------------------------------------------------------------------- model group


@model_app.command("summary")
@delegates
def model_summary(
    ctx: typer.Context,
    preset_name: PresetOpt = None,
    dataset: Annotated[
        Optional[str],
        typer.Option("--dataset", help="dfew | mafw, sets the class count (default: mma.yaml's, the only one prepared, else dfew)."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    image_size: ImageSizeOpt = None,
    latent_dim: LatentOpt = None,
    fusion: FusionOpt = None,
    temporal: TemporalOpt = None,
    ita_dim: ItaDimOpt = None,
    prompts: PromptsOpt = None,
    prompt_introductions: PromptIntroOpt = None,
    modality: ModalityOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Parameters per component (trainable / frozen) and totals."""
    from model.summary import summarize_config as summarize
    from pipeline.data.datasets import dataset_spec

    cfg = _run_config(
        ctx,
        preset_name,
        config,
        set_,
        **_model_flags(image_size, latent_dim, fusion, temporal, ita_dim, prompts, prompt_introductions, modality),
    )
    if dataset is None:
        try:
            dataset = _dataset(ctx, None, config)
        except MMAError:  # nothing named, configured or prepared: the class count of DFEW, as before
            dataset = "dfew"
    if dataset in ("dfew", "mafw"):
        cfg.model.num_classes = dataset_spec(dataset).num_classes
    summary = summarize(cfg.model)
    if as_json:
        _print_json(summary)
    else:
        from model.summary import format_summary

        typer.echo(format_summary(summary))


@model_app.command("import-official")
@delegates
def model_import_official(
    ctx: typer.Context,
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint trained with the authors' code.")],
    dataset: Annotated[str, typer.Option("--dataset", help="dfew | mafw.")],
    image_size: Annotated[int, typer.Option("--image-size", help="S the checkpoint was trained at.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the mma checkpoint.")],
    preset_name: Annotated[
        str, typer.Option("--preset", help="Encoder geometry preset (paper = ViT-B, the authors').")
    ] = "paper",
    force: ForceOpt = False,
) -> None:
    """Convert a checkpoint in the authors' layout into an mma checkpoint."""
    from pipeline.engine.official import import_official

    report_ = import_official(ckpt, dataset=dataset, image_size=image_size, out=out, preset=preset_name, force=force)
    _print_json(report_)


# --------------------------------------------------------------------------- weights group

WeightsDirOpt = Annotated[
    Optional[Path], typer.Option("--dir", help="Weights folder (default: weights_dir of the project, <workdir>/weights).")
]
GeometryOpt = Annotated[
    str, typer.Option("--preset", help="Encoder geometry the files must have: paper (ViT-B/16) | tiny.")
]


def _weights_dir(ctx: typer.Context, folder: Optional[Path]) -> Path:
    return folder if folder is not None else _state(ctx).workspace.weights


def _expected(preset_name: str) -> Any:
    from model.inspect import Expected
    from pipeline.core.config import preset

    return Expected.from_model_config(preset(preset_name).model)


@weights_app.command("list")
@delegates
def weights_list(
    ctx: typer.Context,
    folder: WeightsDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each known checkpoint: what it is, source, licence, expected file name, present or not."""
    from pipeline.weights.store import listing

    where = _weights_dir(ctx, folder)
    rows = listing(where)
    if as_json:
        _print_json({"dir": str(where), "weights": rows})
        return
    typer.echo(f"weights folder: {where}")
    for r in rows:
        state = f"present: {r['path']}" + (f" (sha256 {r['sha256'][:12]})" if r["sha256"] else "") \
            if r["present"] else "missing"
        how = f"mma weights fetch {r['name']}" if r["fetchable"] else f"browser, then: mma weights add {r['name']} FILE"
        typer.echo(f"\n{r['name']}  [{state}]\n  {r['title']}\n  used as: {r['use']}\n  file:    {r['file']}"
                   f"\n  source:  {r['url']}\n  get it:  {how}\n  licence: {r['licence']}"
                   + (f"\n  note:    {r['note']}" if r["note"] else ""))


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

    out = fetch_all(names, _weights_dir(ctx, folder), force=force, expected=_expected(preset_name))
    for r in out["results"]:
        typer.echo(r["text"] if r["status"] == "manual" else f"{r['name']}: {r['status']} {r['path']} "
                   f"(sha256 {r['sha256']})")
    for line in out["errors"]:
        typer.echo(f"error: {line}", err=True)
    if out["errors"]:
        raise typer.Exit(1)


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

    out = add(name, file, _weights_dir(ctx, folder), force=force, link=link, expected=_expected(preset_name))
    typer.echo(f"{name}: {out['status']} {out['path']} (sha256 {out['sha256']})")


@weights_app.command("check")
@delegates
def weights_check(
    file: Annotated[Path, typer.Argument(help="A checkpoint file.")],
    as_: Annotated[
        Optional[str], typer.Option("--as", help="What it must be: vision | audio | mma | authors.")
    ] = None,
    preset_name: GeometryOpt = "paper",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Say what a checkpoint file is (encoder geometry, MAE leftovers, kind); with --as, fail unless it fits."""
    from model.inspect import AS_KINDS, inspect_checkpoint, require
    from pipeline.core.config import check_choice

    expected = _expected(preset_name)
    info = inspect_checkpoint(file, audio_mel_bins=expected.audio_mel_bins)
    typer.echo(json.dumps(info.to_dict(), indent=2, default=str) if as_json else info.describe())
    if as_ is not None:
        check_choice("--as", as_, tuple(AS_KINDS))
        flag = {"vision": "--vision-ckpt", "audio": "--audio-ckpt", "mma": "--checkpoint",
                "authors": "--checkpoint --official"}[as_]
        require(AS_KINDS[as_], info, flag, None if as_ == "mma" else expected, needs=f"--preset {preset_name}")
    elif info.kind == "unknown":
        _fail(f"{file}: {info.short()}", 2)
    elif info.kind in ("vision-encoder", "audio-encoder", "authors-trained"):
        require(info.kind, info, "", expected, needs=f"--preset {preset_name}")
    typer.echo("ok")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
