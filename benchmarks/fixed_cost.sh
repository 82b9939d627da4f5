#!/usr/bin/env bash
# Issue 14 on a GPU machine: where a cell's time goes with the cuts (execution defaults) and without
# them (prestart_child false, teardown graceful, compile_cache engine), plus plugin-vs-bare parity.
#   bash benchmarks/fixed_cost.sh engines OUT   # engines study, n64 cells of cycles c0 and c1 (fresh machine)
#   bash benchmarks/fixed_cost.sh gpubound OUT  # gpu-bound: 2 cells with the cuts, 1 without, 2 bare loops
#   bash benchmarks/fixed_cost.sh restored OUT  # after `engines`: a first vLLM cell whose compile cache
#                                               # was restored (copied, page cache dropped), as on a fresh
#                                               # machine whose CI cache or shared storage holds one
#   bash benchmarks/fixed_cost.sh parity OUT    # gpu-bound, cuts on: bare loop, 2 cells, bare loop
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
restored)
    # What a fresh machine gets from a cache kept elsewhere: a copy of the cache `engines` filled, no
    # file of it in memory, a new pytest session whose first cell is the vLLM one.
    src="${LLEM_CACHE_DIR:-$HOME/.cache/pytest-llem}/compile"
    rm -rf /tmp/restored && cp -a "$src" /tmp/restored
    echo "restored compile cache: $(du -sh /tmp/restored | cut -f1), $(find /tmp/restored -type f | wc -l) files"
    du -sh /tmp/restored/*/* 2>/dev/null
    mkdir -p /tmp/restored-study
    sed 's|^execution: {n_cycles: 2}$|execution: {n_cycles: 2, compile_cache: /tmp/restored}|' \
        benchmarks/studies/engines-llama3-8b.llem.yaml > /tmp/restored-study/engines-llama3-8b.llem.yaml
    grep -q 'compile_cache: /tmp/restored' /tmp/restored-study/engines-llama3-8b.llem.yaml || { echo "study not rewritten"; exit 1; }
    sync; echo 3 > /proc/sys/vm/drop_caches && echo "page cache dropped" || echo "page cache NOT dropped"
    "${PYTEST[@]}" /tmp/restored-study/engines-llama3-8b.llem.yaml -k "vllm-n64 and c0 and not untimed" \
        --llem-results-dir "$out/res" > "$out/restored.log" 2>&1
    ;;
parity)
    python3 benchmarks/bare_loop.py --json "$out/bare_0.json" > "$out/bare_0.log" 2>&1
    "${PYTEST[@]}" benchmarks/studies/gpu-bound.llem.yaml -k "c0 or c1" --llem-results-dir "$out/plugin" > "$out/plugin.log" 2>&1
    python3 benchmarks/bare_loop.py --json "$out/bare_1.json" > "$out/bare_1.log" 2>&1
    ;;
esac
