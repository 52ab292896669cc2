bash .gpu/install.sh > /dev/null 2>&1; export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r; T() { tar czf $OUT/s11c.tgz -C /tmp/r . 2>/dev/null; }
R() { { time python3 -m tune.search --device auto > /tmp/r/readme_$1.log 2>&1 ; } 2>> /tmp/r/readme_$1.log; echo "readme $1 $(grep real /tmp/r/readme_$1.log)"; }
python3 -m benchmarks.search cpu --output /tmp/r/search_demo_s11_warm.json > /tmp/r/search_demo_s11_warm.log 2>&1; grep -A3 "overhead median" /tmp/r/search_demo_s11_warm.log; T
patch -R -p1 < gpurun/preload.diff > /dev/null
python3 -m benchmarks.search cpu --output /tmp/r/search_demo_s11_cold.json > /tmp/r/search_demo_s11_cold.log 2>&1; grep -A3 "overhead median" /tmp/r/search_demo_s11_cold.log; T
R cold_1; T
patch -p1 < gpurun/preload.diff > /dev/null
R warm_1; T
