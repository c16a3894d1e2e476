#!/usr/bin/env bash
# One device check of `mma` on a fresh GPU machine, in under 8 minutes on one H100/H200:
#
#   1 install      python3 -m venv .venv && .venv/bin/pip install -q -e .   (README, "Set-up")
#   2 env          torch, CUDA, the GPU, its dense bf16 peak
#   3 synth        mma synth: 4 classes x 8 clips of 2 s in MAFW layout (nothing downloaded)
#   4 prep         mma prep synth (MTCNN on the GPU), then mma shard synth
#   5 summary      mma model summary --json: parameters and FLOPs per clip at the paper's settings
#   6 bench        bench/train_step.py: the paper preset at S=160 in bf16, compile off and on, batch 8
#                  and the largest that fits (clips/s, ms/step, peak memory, MFU)
#   7 train        mma train synth --fold 1 --preset paper (bf16, 2 epochs, random encoders)
#   8 eval         mma eval of that run's last.pt
#   9 predict      mma predict on one synth video
#
# Everything measured lands in OUT (default bench/results/device_check): one JSON per step, each
# step's log, and device_check.json with all of it; a table is printed at the end. A failing step
# is reported and the steps that do not depend on it still run; the exit status is 1 if any failed.
#
#   bash bench/device_check.sh                      # on the GPU machine, from the repository root
#   bash bench/device_check.sh --no-install --python .venv/bin/python
#   bash bench/device_check.sh --cpu --no-install   # the same steps at tiny sizes on the CPU (tests/bench)
#
# Options: --out DIR, --work DIR (scratch; default a new temp dir), --python PY (with --no-install),
# --cpu, --no-install. DEVICE_CHECK_BATCHES (default "8,max") sets the benchmark's batch sizes.
set -uo pipefail

OUT=bench/results/device_check
WORK=""
PY=""
CPU=0
INSTALL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --cpu) CPU=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ ! -f pyproject.toml ] || [ ! -f cli.py ]; then
  echo "error: run from the mma repository root ($(pwd) has no pyproject.toml / cli.py)" >&2; exit 2
fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$(mktemp -d -t mma-device-check-XXXXXX)}
mkdir -p "$WORK" || exit 2
WORK=$(cd "$WORK" && pwd)
STEPS="$OUT/steps.jsonl"
: > "$STEPS"
export PYTHONUNBUFFERED=1

# step NAME COMMAND...: run it, log to OUT/NAME.log, append {name, rc, seconds, log} to steps.jsonl
step() {
  local name="$1"; shift
  local start end rc
  echo "== $name: $*"
  start=$(date +%s.%N)
  "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  printf '{"name": "%s", "rc": %d, "seconds": %s, "log": "%s"}\n' "$name" "$rc" \
    "$(awk "BEGIN {printf \"%.1f\", $end - $start}")" "$OUT/$name.log" >> "$STEPS"
  if [ $rc -ne 0 ]; then echo "   FAILED (exit $rc): tail of $OUT/$name.log"; tail -n 5 "$OUT/$name.log" | sed 's/^/   | /'; fi
  return $rc
}
skip() { printf '{"name": "%s", "rc": null, "seconds": 0, "log": null, "skipped": "%s"}\n' "$1" "$2" >> "$STEPS"; echo "== $1: skipped ($2)"; }

# 1 install (per README), or the given interpreter
if [ $INSTALL -eq 1 ]; then
  step install bash -c "python3 -m venv .venv && .venv/bin/pip install -q -e ." || { echo "install failed"; }
  PY=${PY:-.venv/bin/python}
else
  PY=${PY:-python3}
  skip install "--no-install: using $PY"
fi
MMA=("$PY" -m cli --workdir "$WORK/work" --manifests "$WORK/work/data_manifests")

if [ $CPU -eq 1 ]; then
  CLIPS=3; CLASSES=4; SECONDS_=1.0; WORKERS=1; CROP=64; CLUSTER=serial
  EVAL=(--preset tiny)
  TRAIN=("${EVAL[@]}" --epochs 1 --workers 0)
  BENCH=(--device cpu --preset tiny --precisions fp32 --compile off --batches 2 --steps 1 --warmup 1)
  SUMMARY=(--preset tiny)
  DEVICE=(--device cpu)
else
  CLIPS=8; CLASSES=4; SECONDS_=2.0; WORKERS=8; CROP=224; CLUSTER=local
  EVAL=(--preset paper --set data.compat=mma)
  TRAIN=("${EVAL[@]}" --precision bf16 --epochs 2 --workers 8)
  BENCH=(--preset paper --image-size 160 --precisions bf16 --compile off,on --batches "${DEVICE_CHECK_BATCHES:-8,max}"
         --steps 10 --warmup 3)
  SUMMARY=(--preset paper)
  DEVICE=(--device cuda)
fi

# 2 env
step env "$PY" - "$OUT/env.json" "$CPU" <<'EOF'
import json, platform, sys
import torch
from pipeline.engine.flops import device_peak
cpu = sys.argv[2] == "1"
dev = torch.device("cpu" if cpu or not torch.cuda.is_available() else "cuda")
if not cpu and dev.type != "cuda":
    sys.exit("no CUDA device visible to torch (run with --cpu for the CPU check)")
env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "device": str(dev), "peak": device_peak(dev, "bf16"),
       "capability": list(torch.cuda.get_device_capability(dev)) if dev.type == "cuda" else None,
       "memory_gb": torch.cuda.get_device_properties(dev).total_memory / 2**30 if dev.type == "cuda" else None}
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env))
EOF
ENV_OK=$?

# 3-4 data
DATA_OK=1
step synth "${MMA[@]}" synth --out "$WORK/raw/MAFW" --clips-per-class $CLIPS --classes $CLASSES --seconds $SECONDS_ \
  || DATA_OK=0
if [ $DATA_OK -eq 1 ]; then
  step prep "${MMA[@]}" prep synth --root "$WORK/raw/MAFW" --workers $WORKERS --cluster $CLUSTER --set data.compat=mma \
    --set "data.crop_size=$CROP" || DATA_OK=0
else skip prep "synth failed"; fi
if [ $DATA_OK -eq 1 ]; then step shard "${MMA[@]}" shard synth || DATA_OK=0; else skip shard "prep failed"; fi

# 5-6 model: FLOPs and the training-step benchmark (synthetic batches: independent of the data steps)
step summary bash -c '"$@" > "'"$OUT"'/summary.json"' _ "${MMA[@]}" model summary --json "${SUMMARY[@]}"
if [ $ENV_OK -eq 0 ]; then
  step bench "$PY" bench/train_step.py "${BENCH[@]}" --json "$OUT/train_step.json"
else skip bench "no device"; fi

# 7-9 a short real run on the device
RUN="$WORK/run/fold1"
TRAIN_OK=0
if [ $DATA_OK -eq 1 ] && [ $ENV_OK -eq 0 ]; then
  step train "${MMA[@]}" train synth --fold 1 "${TRAIN[@]}" --run-dir "$RUN" && TRAIN_OK=1
else skip train "no data or no device"; fi
if [ $TRAIN_OK -eq 1 ]; then
  step eval "${MMA[@]}" eval synth --fold 1 "${EVAL[@]}" --checkpoint "$RUN/last.pt" --out "$WORK/eval"
  VIDEO=$("$PY" - "$WORK/raw/MAFW" <<'EOF'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
faulty = {pathlib.Path(f["video"]).name for f in json.loads((root / "synth.json").read_text()).get("faults", [])}
print(next(str(p) for p in sorted(root.rglob("*.mp4")) if p.name not in faulty))
EOF
  )
  step predict "${MMA[@]}" predict "$VIDEO" --checkpoint "$RUN/last.pt" --out "$WORK/pred" "${DEVICE[@]}"
else skip eval "train failed"; skip predict "train failed"; fi

# report: every step's numbers in device_check.json, and a table
"$PY" - "$OUT" "$WORK" "$CPU" <<'EOF'
import json, pathlib, sys
out, work, cpu = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == "1"

def load(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None

steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
run = work / "run" / "fold1"
metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()] if (run / "metrics.jsonl").exists() else []
result, evaluated = load(run / "result.json"), load(work / "eval" / "eval.json")
pred = sorted((work / "pred").glob("*/summary.json")) if (work / "pred").exists() else []
bench, summary, env = load(out / "train_step.json"), load(out / "summary.json"), load(out / "env.json")
report = {"mode": "cpu" if cpu else "gpu", "env": env, "steps": steps, "summary_flops": summary and {
              k: summary.get(k) for k in ("flops_forward_per_clip", "flops_train_per_clip", "trainable_params")},
          "train_step": bench and bench["rows"],
          "train": result and {k: result.get(k) for k in ("uar", "war", "clips", "epochs", "image_size")},
          "train_epochs": [{k: m.get(k) for k in ("epoch", "loss", "clips_per_s", "seconds", "peak_mem_mb")} for m in metrics],
          "eval": evaluated and {k: evaluated.get(k) for k in ("uar", "war", "clips")},
          "eval_matches_train": bool(result and evaluated and result["uar"] == evaluated["uar"]),
          "predict": load(pred[0]) if pred else None}
report["ok"] = all(s["rc"] == 0 for s in steps if s.get("rc") is not None) and not any(
    s.get("skipped") and s["name"] != "install" for s in steps)
(out / "device_check.json").write_text(json.dumps(report, indent=2, default=str))

print(f"\n{'step':<10} {'status':<8} {'seconds':>8}  notes")
print("-" * 72)
for s in steps:
    status = "skipped" if s.get("skipped") else ("ok" if s["rc"] == 0 else f"exit {s['rc']}")
    note = s.get("skipped") or ""
    if s["name"] == "env" and env:
        note = f"{env['peak']['name']}, torch {env['torch']}, CUDA {env['cuda']}"
    if s["name"] == "summary" and report["summary_flops"]:
        f = report["summary_flops"]
        note = f"{f['flops_forward_per_clip'] / 1e9:.1f} GFLOP forward, {f['flops_train_per_clip'] / 1e9:.1f} training, per clip"
    if s["name"] == "train" and metrics:
        note = f"{len(metrics)} epoch(s), last {metrics[-1]['clips_per_s']:.1f} clips/s, UAR {result['uar']:.1f}" if result else ""
    if s["name"] == "eval" and evaluated:
        note = f"UAR {evaluated['uar']:.1f} ({'=' if report['eval_matches_train'] else '!='} train)"
    if s["name"] == "predict" and report["predict"]:
        note = f"top class {report['predict'].get('top_class')}"
    print(f"{s['name']:<10} {status:<8} {s['seconds']:>8}  {note}")
if bench:
    print(f"\n{'prec':<5} {'compile':<7} {'batch':>9} {'clips/s':>9} {'ms/step':>9} {'peak GB':>8} {'1st s':>7} {'MFU %':>6} {'fold min':>8}")
    for r in bench["rows"]:
        def f(v, spec):
            return "-" if v is None else format(v, spec)
        batch = f"{r['batch']}" + ("(max)" if r["batch_label"] == "max" else "")
        print(f"{r['precision']:<5} {'on' if r['compile'] else 'off':<7} {batch:>9} "
              f"{'OOM' if r['oom'] else f(r['clips_per_s'], '.1f'):>9} {f(r['step_ms'], '.1f'):>9} "
              f"{f(r['peak_mem_mb'] and r['peak_mem_mb'] / 1024, '.1f'):>8} {f(r['first_step_s'], '.1f'):>7} "
              f"{f(r['mfu'] and 100 * r['mfu'], '.1f'):>6} {f(r['fold_min'], '.1f'):>8}")
print(f"\n{'OK' if report['ok'] else 'FAILED'}: wrote {out / 'device_check.json'}")
sys.exit(0 if report["ok"] else 1)
EOF
