# Session 14: channels-last by default for the stacked topology (unset --channels-last) — exactness, pre-flight, speed.
# NOT RUN: no device machine was lent in session 14. Apply session14_channels_last_default.diff first (git apply).
bash .gpu/install.sh > /dev/null 2>&1; export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
SP=$(python3 -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")
python3 -m compileall -q -j 16 /tmp/site $SP $PWD > /dev/null 2>&1
mkdir -p /tmp/r; T() { tar czf $OUT/s14a.tgz -C /tmp/r . 2>/dev/null; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > /tmp/r/gpu.txt; nproc >> /tmp/r/gpu.txt; cat /tmp/r/gpu.txt; T
timeout 120 python3 -m benchmarks.trainer --epochs 3 --days 150 --only "default path (CUDA" "default path, NCHW" --output /tmp/r/trainer_s14_default_cl.json > /tmp/r/trainer_s14_default_cl.log 2>&1; tail -6 /tmp/r/trainer_s14_default_cl.log; T
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/model/test_cuda.py -k "by_default or channels_last or graphed or fused or partial" > /tmp/r/gpu_tests_s14_cuda.log 2>&1; tail -4 /tmp/r/gpu_tests_s14_cuda.log; T
timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/tune/test_preflight_gpu.py > /tmp/r/gpu_tests_s14_preflight.log 2>&1; tail -4 /tmp/r/gpu_tests_s14_preflight.log; T
timeout 160 python3 -m benchmarks.vs_graphcast --graphcast-dir .graphcast --data /tmp/ref_up_120d.nc --days 120 --epochs 3 --output /tmp/r/vs_graphcast_s14_default_cl.json > /tmp/r/vs_graphcast_s14_default_cl.log 2>&1; tail -8 /tmp/r/vs_graphcast_s14_default_cl.log; T
