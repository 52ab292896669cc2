# Session 11's second batch: GPU tests (GateNorm, graphed variants, preload), graphcast like for like with GateNorm,
# GateNorm against nn.GroupNorm in one run, the warm workers against none in one run, then the fixed gate sweep.
bash .gpu/install.sh > /dev/null 2>&1; export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
SP=$(python3 -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")
python3 -m compileall -q -j 16 /tmp/site $SP $PWD > /dev/null 2>&1
mkdir -p /tmp/r; T() { tar czf $OUT/s11b.tgz -C /tmp/r . 2>/dev/null; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > /tmp/r/gpu.txt; nproc >> /tmp/r/gpu.txt; T
python3 -m pytest -q -p no:cacheprovider -m gpu tests/model/test_cuda.py -k "gate_norm or graphcast_variants or fused or partial" tests/tune/test_preload_gpu.py tests/tune/test_preload.py > /tmp/r/gpu_tests_s11.log 2>&1; tail -4 /tmp/r/gpu_tests_s11.log; T
G="--upstream --hidden-channels 64 128 --batch-size 4 --model-type dual_stream --epochs 3 --days 120 --data /tmp/ref_up_120d.nc --only"
python3 -m benchmarks.vs_graphcast --graphcast-dir .graphcast --data /tmp/ref_up_120d.nc --days 120 --epochs 3 --layouts --output /tmp/r/vs_graphcast_s11_gatenorm.json > /tmp/r/vs_graphcast_s11_gatenorm.log 2>&1; tail -8 /tmp/r/vs_graphcast_s11_gatenorm.log; T
python3 -m benchmarks.trainer $G "default path (CUDA" --output /tmp/r/trainer_dual_gc_gatenorm.json > /tmp/r/trainer_dual_gc_gatenorm.log 2>&1; tail -1 /tmp/r/trainer_dual_gc_gatenorm.log
patch -R -p1 < gpurun/norm.diff > /dev/null
python3 -m benchmarks.trainer $G "default path (CUDA" --output /tmp/r/trainer_dual_gc_groupnorm.json > /tmp/r/trainer_dual_gc_groupnorm.log 2>&1; tail -1 /tmp/r/trainer_dual_gc_groupnorm.log
patch -p1 < gpurun/norm.diff > /dev/null; T
R() { { time python3 -m tune.search --device auto > /tmp/r/readme_$1.log 2>&1 ; } 2>> /tmp/r/readme_$1.log; echo "readme $1 $(grep real /tmp/r/readme_$1.log)"; }
R warm_first; T
python3 -m benchmarks.search cpu --output /tmp/r/search_demo_s11_warm.json > /tmp/r/search_demo_s11_warm.log 2>&1; grep -A3 "overhead median" /tmp/r/search_demo_s11_warm.log; T
R warm_1; T
patch -R -p1 < gpurun/preload.diff > /dev/null
python3 -m benchmarks.search cpu --output /tmp/r/search_demo_s11_cold.json > /tmp/r/search_demo_s11_cold.log 2>&1; grep -A3 "overhead median" /tmp/r/search_demo_s11_cold.log; T
R cold_1; T
patch -p1 < gpurun/preload.diff > /dev/null
python3 -m benchmarks.gates --output /tmp/r/gates_sweep_graphed.json > /tmp/r/gates_sweep_graphed.log 2>&1; T
python3 - <<'PY' > /tmp/r/gates_best_graphed.txt
import json, collections
rows = json.load(open("/tmp/r/gates_sweep_graphed.json"))["rows"]
for kind in ("forward", "backward"):
    tot = collections.defaultdict(float)
    for r in rows:
        tot[(r["elements"], r["warps"])] += r[kind + "_us"]
    for k, v in sorted(tot.items(), key=lambda kv: kv[1])[:4]:
        print(kind, k[0], k[1], round(v, 1))
PY
cat /tmp/r/gates_best_graphed.txt; T
