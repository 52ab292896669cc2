# Session 10's H200 batch (one device call, on the code of benchmarks/results/session10_hoisted_input_gates.diff applied
# to commit d713fa7; BENCHMARKS.md §8 'Session 10'). Run from the repository root with .gpu/ and .graphcast/ carried.
bash .gpu/install.sh > /dev/null 2>&1; export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
SP=$(python3 -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")
python3 -m compileall -q -j 16 /tmp/site $SP $PWD > /dev/null 2>&1
mkdir -p /tmp/r; T() { tar czf $OUT/s10a.tgz -C /tmp/r . 2>/dev/null; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > /tmp/r/gpu.txt; nproc >> /tmp/r/gpu.txt
python3 -c "import torch, ray, triton; print(torch.__version__, ray.__version__, triton.__version__)" >> /tmp/r/gpu.txt; T
python3 -m benchmarks.trainer --epochs 3 --days 150 --only "default path (CUDA" "default path + channels-last" --output /tmp/r/trainer_h200_hoist.json > /tmp/r/trainer_h200_hoist.log 2>&1; tail -3 /tmp/r/trainer_h200_hoist.log; T
python3 -m pytest -q -p no:cacheprovider -m gpu tests/model/test_cuda.py -k "fused or partial or graphed or channels_last" > /tmp/r/h200_gpu_tests_session10_hoist.log 2>&1; tail -4 /tmp/r/h200_gpu_tests_session10_hoist.log; T
python3 -m benchmarks.vs_graphcast --graphcast-dir .graphcast --data /tmp/ref_up_120d.nc --days 120 --epochs 3 --layouts --output /tmp/r/vs_graphcast_h200_hoist.json > /tmp/r/vs_graphcast_h200_hoist.log 2>&1; tail -7 /tmp/r/vs_graphcast_h200_hoist.log; T
python3 -m pytest -q -p no:cacheprovider -m gpu tests/tune/test_preflight_gpu.py > /tmp/r/h200_gpu_tests_session10_preflight.log 2>&1; tail -4 /tmp/r/h200_gpu_tests_session10_preflight.log; T
