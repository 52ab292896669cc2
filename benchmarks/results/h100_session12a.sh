# Session 12: the amended GateNorm GPU test and the rest of tests/model/test_cuda.py, then the graph-replayed gate sweep.
bash .gpu/install.sh > /dev/null 2>&1; export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
SP=$(python3 -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")
python3 -m compileall -q -j 16 /tmp/site $SP $PWD > /dev/null 2>&1
mkdir -p /tmp/r; T() { tar czf $OUT/s12a.tgz -C /tmp/r . 2>/dev/null; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > /tmp/r/gpu.txt; nproc >> /tmp/r/gpu.txt; T
timeout 280 python3 -m pytest -q -p no:cacheprovider -m gpu tests/model/test_cuda.py -k gate_norm > /tmp/r/h100_gpu_tests_s12_gatenorm.log 2>&1; tail -3 /tmp/r/h100_gpu_tests_s12_gatenorm.log; T
timeout 200 python3 -m benchmarks.gates --output /tmp/r/gates_sweep_h100_graphed.json > /tmp/r/gates_sweep_h100_graphed.log 2>&1; tail -25 /tmp/r/gates_sweep_h100_graphed.log; T
timeout 250 python3 -m pytest -q -p no:cacheprovider -m gpu tests/model/test_cuda.py -k "not gate_norm" > /tmp/r/h100_gpu_tests_s12_cuda.log 2>&1; tail -3 /tmp/r/h100_gpu_tests_s12_cuda.log; T
