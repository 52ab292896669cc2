# Session 11's first H200 batch: the gate kernels' tile sweep, the trainer with the shipped and the best tiles,
# cuDNN autotune beside channels-last, and the dual_stream profile at graphcast's settings.
bash .gpu/install.sh > /dev/null 2>&1; export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
SP=$(python3 -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")
python3 -m compileall -q -j 16 /tmp/site $SP $PWD > /dev/null 2>&1
mkdir -p /tmp/r; T() { tar czf $OUT/s11a.tgz -C /tmp/r . 2>/dev/null; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > /tmp/r/gpu.txt; nproc >> /tmp/r/gpu.txt
python3 -c "import torch, ray, triton; print(torch.__version__, ray.__version__, triton.__version__)" >> /tmp/r/gpu.txt; cat /tmp/r/gpu.txt; T
python3 -m benchmarks.gates --output /tmp/r/gates_sweep.json > /tmp/r/gates_sweep.log 2>&1; tail -3 /tmp/r/gates_sweep.log; T
python3 - > /tmp/r/gates_best.txt <<'PY'
import json, collections
rows = json.load(open("/tmp/r/gates_sweep.json"))["rows"]
for kind in ("forward", "backward"):
    tot = collections.defaultdict(float)
    for r in rows:
        tot[(r["elements"], r["warps"])] += r[kind + "_us"]
    for k, v in sorted(tot.items(), key=lambda kv: kv[1]):
        print(kind, k[0], k[1], round(v, 1))
PY
cat /tmp/r/gates_best.txt; T
FWD=$(grep ^forward /tmp/r/gates_best.txt | head -1 | awk '{print $2","$3}'); BWD=$(grep ^backward /tmp/r/gates_best.txt | head -1 | awk '{print $2","$3}')
python3 -m benchmarks.trainer --epochs 3 --days 150 --only "default path (CUDA" "default path + channels-last" "default path + cuDNN autotune + channels-last" --output /tmp/r/trainer_h200_s11_base.json > /tmp/r/trainer_h200_s11_base.log 2>&1; tail -4 /tmp/r/trainer_h200_s11_base.log; T
python3 -c "
from model import _gates
_gates._TILES.update(forward=($FWD), backward=($BWD)); print(_gates._TILES)
from benchmarks import trainer
trainer.main(['--epochs', '3', '--days', '150', '--only', 'default path (CUDA', 'default path + channels-last', '--output', '/tmp/r/trainer_h200_s11_tiles.json'])
" > /tmp/r/trainer_h200_s11_tiles.log 2>&1; tail -4 /tmp/r/trainer_h200_s11_tiles.log; T
python3 -m benchmarks.profile --data /tmp/ref_up_120d.nc --days 120 --upstream --batch-size 4 --hidden-channels 64 128 --model-type dual_stream --output /tmp/r/profile_dual_stream_gc.json > /tmp/r/profile_dual_stream_gc.log 2>&1; head -30 /tmp/r/profile_dual_stream_gc.log | cut -c1-150; T
