#!/usr/bin/env bash
# Issue 14 on a GPU machine: where a cell's time goes with the cuts (execution defaults) and without
# them (prestart_child false, teardown graceful, compile_cache engine), plus plugin-vs-bare parity.
#   bash benchmarks/fixed_cost.sh engines OUT   # engines study, n64 cells of cycles c0 and c1 (fresh machine)
#   bash benchmarks/fixed_cost.sh gpubound OUT  # gpu-bound: 2 cells with the cuts, 1 without, 2 bare loops
#   bash benchmarks/fixed_cost.sh vllm-first OUT  # fresh machine: a session of the first vLLM cell alone
#   bash benchmarks/fixed_cost.sh restored OUT    # then the same with only the compile cache kept
#                                                 # (restored in place, page cache dropped)
#   bash benchmarks/fixed_cost.sh alternating OUT # fresh machine: transformers and vLLM in turn, short cells
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
vllm-first)
    # The first vLLM cell of a fresh machine: a new session with only that cell (nothing compiled yet).
    "${PYTEST[@]}" benchmarks/studies/engines-llama3-8b.llem.yaml -k "vllm-n64 and c0 and not untimed" \
        --llem-results-dir "$out/res" > "$out/vllm-first.log" 2>&1
    ;;
restored)
    # After vllm-first or engines: the same first vLLM cell on a machine that has nothing but its
    # compile cache, restored at the same path (a CI cache step, shared storage): the libraries'
    # default caches are removed, the compile cache is replaced by a copy of itself, the page cache
    # is dropped. FlashInfer rebuilds its JIT kernels when their directory moves (its build files
    # hold absolute paths), so a cache must come back where it was written.
    src="${LLEM_CACHE_DIR:-$HOME/.cache/pytest-llem}/compile"
    echo "libraries' default caches (removed):"
    du -sh ~/.cache/vllm ~/.cache/flashinfer ~/.triton ~/.nv /tmp/torchinductor_* 2>/dev/null
    rm -rf ~/.cache/vllm ~/.cache/flashinfer ~/.triton ~/.nv /tmp/torchinductor_*
    rm -rf /tmp/compile-kept && mv "$src" /tmp/compile-kept && cp -a /tmp/compile-kept "$src" && rm -rf /tmp/compile-kept
    echo "restored compile cache: $(du -sh "$src" | cut -f1), $(find "$src" -type f | wc -l) files"
    du -sh "$src"/*/* 2>/dev/null
    sync; echo 3 > /proc/sys/vm/drop_caches && echo "page cache dropped" || echo "page cache NOT dropped"
    "${PYTEST[@]}" benchmarks/studies/engines-llama3-8b.llem.yaml -k "vllm-n64 and c0 and not untimed" \
        --llem-results-dir "$out/res" > "$out/restored.log" 2>&1
    ;;
alternating)
    # Two engines in turn (transformers, vLLM, transformers, vLLM) on a fresh machine: whether the
    # second vLLM cell finds its imports done (its spare started while the first vLLM cell loaded).
    "${PYTEST[@]}" benchmarks/studies/alternating-engines.llem.yaml --llem-results-dir "$out/res" > "$out/alternating.log" 2>&1
    ;;
parity)
    python3 benchmarks/bare_loop.py --json "$out/bare_0.json" > "$out/bare_0.log" 2>&1
    "${PYTEST[@]}" benchmarks/studies/gpu-bound.llem.yaml -k "c0 or c1" --llem-results-dir "$out/plugin" > "$out/plugin.log" 2>&1
    python3 benchmarks/bare_loop.py --json "$out/bare_1.json" > "$out/bare_1.log" 2>&1
    ;;
esac
