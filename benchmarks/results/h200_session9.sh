# Session 9's H200 batch (one device call; see BENCHMARKS.md §8 'Session 9'). Run from the repository root with
# .gpu/ carried: bash benchmarks/results/h200_session9.sh; its files land in /tmp/r and $OUT/s9a.tgz.
bash .gpu/install.sh > /dev/null 2>&1; export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
SP=$(python3 -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")
python3 -m compileall -q -j 16 /tmp/site $SP $PWD > /dev/null 2>&1
mkdir -p /tmp/r; T() { tar czf $OUT/s9a.tgz -C /tmp/r . 2>/dev/null; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > /tmp/r/gpu.txt; nproc >> /tmp/r/gpu.txt
python3 -c "import torch, ray, triton; print(torch.__version__, ray.__version__, triton.__version__)" >> /tmp/r/gpu.txt; T
python3 -m pytest -q -p no:cacheprovider -m gpu tests/model/test_cuda.py -k "fused or partial or graphed or channels_last" > /tmp/r/h200_gpu_tests_session9_bias.log 2>&1; tail -4 /tmp/r/h200_gpu_tests_session9_bias.log; T
python3 -m pytest -q -p no:cacheprovider -m gpu tests/tune/test_preflight_gpu.py > /tmp/r/h200_gpu_tests_session9_preflight.log 2>&1; tail -4 /tmp/r/h200_gpu_tests_session9_preflight.log; T
TIMEFORMAT='wall %R s'
for n in first 1 2 3; do { time python3 -m tune.search --device auto > /tmp/r/h200_readme_search_session9_fit_$n.log 2>&1 ; } 2>> /tmp/r/h200_readme_search_session9_fit_$n.log; echo "readme $n $(tail -1 /tmp/r/h200_readme_search_session9_fit_$n.log)"; grep -m1 "gpus-per-trial fit" /tmp/r/h200_readme_search_session9_fit_$n.log; T; done
python3 -m benchmarks.trainer --epochs 3 --days 150 --only "default path (CUDA" "default path + channels-last" --output /tmp/r/trainer_h200_bias.json > /tmp/r/trainer_h200_bias.log 2>&1; tail -4 /tmp/r/trainer_h200_bias.log; T
python3 -m benchmarks.profile --days 150 --channels-last --output /tmp/r/profile_stacked_b16_channels_last_bias.json > /tmp/r/profile_stacked_b16_channels_last_bias.log 2>&1; sed -n 3,16p /tmp/r/profile_stacked_b16_channels_last_bias.log; T
python3 -m benchmarks.profile --days 150 --output /tmp/r/profile_stacked_b16_bias.json > /tmp/r/profile_stacked_b16_bias.log 2>&1; sed -n 3,16p /tmp/r/profile_stacked_b16_bias.log; T
python3 -m benchmarks.vs_graphcast --graphcast-dir .graphcast --data /tmp/ref_up_120d.nc --days 120 --epochs 3 --layouts --output /tmp/r/vs_graphcast_h200_bias.json > /tmp/r/vs_graphcast_h200_bias.log 2>&1; tail -7 /tmp/r/vs_graphcast_h200_bias.log; T
python3 -m benchmarks.search cpu --output /tmp/r/search_demo_session9.json > /tmp/r/search_demo_session9.log 2>&1; grep -A3 "overhead median" /tmp/r/search_demo_session9.log; T
