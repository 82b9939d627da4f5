#!/usr/bin/env bash
# Issue 14 on a GPU machine: where a cell's time goes with the cuts (execution defaults) and without
# them (prestart_child false, teardown graceful, compile_cache engine), plus plugin-vs-bare parity.
#   bash benchmarks/fixed_cost.sh engines OUT   # engines study, n64 cells of cycles c0 and c1 (fresh machine)
#   bash benchmarks/fixed_cost.sh gpubound OUT  # gpu-bound: 2 cells with the cuts, 1 without, 2 bare loops
# Run from the repository root with the plugin importable (PYTHONPATH, see ../shared/gpu/README.md).
set -u
what=$1; out=$2; mkdir -p "$out"
PYTEST=(python3 -m pytest -p pytest_llem.plugin -p no:cacheprovider -q)
shm() { echo "/dev/shm entries: $(ls /dev/shm | wc -l), $(du -sk /dev/shm | cut -f1) KiB"; }
case $what in
engines)
    shm
    "${PYTEST[@]}" benchmarks/studies/engines-llama3-8b.llem.yaml -k "n64 and not untimed" \
        --llem-results-dir "$out/res" > "$out/engines.log" 2>&1
    shm
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv
    ;;
gpubound)
    "${PYTEST[@]}" benchmarks/studies/gpu-bound.llem.yaml -k "c0 or c1" --llem-results-dir "$out/after" > "$out/after.log" 2>&1
    python3 benchmarks/bare_loop.py --json "$out/bare_0.json" > "$out/bare_0.log" 2>&1
    mkdir -p /tmp/before
    sed 's/^  n_cycles: 5$/  n_cycles: 5\n  prestart_child: false\n  teardown: graceful\n  compile_cache: engine/' \
        benchmarks/studies/gpu-bound.llem.yaml > /tmp/before/gpu-bound.llem.yaml
    "${PYTEST[@]}" /tmp/before/gpu-bound.llem.yaml -k "c0" --llem-results-dir "$out/before" > "$out/before.log" 2>&1
    python3 benchmarks/bare_loop.py --json "$out/bare_1.json" > "$out/bare_1.log" 2>&1
    ;;
esac
