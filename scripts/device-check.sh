#!/usr/bin/env bash
# device-check.sh — one command for a GPU machine: configure and build zmlx
# (Release, CUDA on), run the whole CTest suite, compute-sanitizer memcheck
# and racecheck on the CUDA tests, then `zmlx bench moe-layer --backend cuda`
# for the four MoE shapes. Logs and capsules go to $BUILD/device-check; when
# $OUT is set the capsules and one logs.tgz are copied there (the device
# tool returns at most 8 files). A short table is printed last.
# The `model` step writes a full-size Qwen3-30B-A3B-shaped random 4-bit
# checkpoint (make-tiny --preset, ~16 GiB) and runs `zmlx validate` on CUDA:
# fused vs unfused over TOKENS_VALIDATE greedy tokens, with a capsule.
#
# The `decode` step runs `zmlx bench decode` on that checkpoint at prompt
# lengths DECODE_PROMPTS (512 4000) for DECODE_TOKENS (256) greedy tokens.
#
# `profile` (not in all): ncu durations of one eager decode step's kernels.
#
# The `lfm2` step checks the lfm2_moe forward against transformers and times
# its full-size decode.
#
#   scripts/device-check.sh [all|build|test|sanitize|bench|decode|model|lfm2|profile]...   (default: all)
# Environment: BUILD (default build-device), LAYERS (48), TOKENS (1,4,16,32,64),
# SHAPES (the four), JOBS (nproc), ZMLX_GIT_COMMIT (the commit the capsules
# record, e.g. `git rev-parse --short=12 HEAD` taken where the tree came from:
# the device copy's .git is a snapshot of the session start).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-device}
LAYERS=${LAYERS:-48}
TOKENS=${TOKENS:-1,4,16,32,64}
SHAPES=${SHAPES:-"qwen3-30b-a3b glm-4.7-flash lfm2-8b-a1b gpt-oss-20b"}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
OUTDIR=$BUILD/device-check
mkdir -p "$OUTDIR"
steps=${*:-all}
summary=()
note() { summary+=("$1"); echo "== $1"; }
want() { [[ ( " $steps " == *" all "* && $1 != profile ) || " $steps " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$OUTDIR/gpu.txt"

if want build; then
    t0=$(date +%s)
    # keep going past other areas' broken files: the CUDA targets may still build
    if cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DZMLX_CUDA=ON >"$OUTDIR/configure.log" 2>&1 &&
       cmake --build "$BUILD" -j "$JOBS" -- -k 0 >"$OUTDIR/build.log" 2>&1; then
        note "build: ok ($(( $(date +%s) - t0 )) s)"
    else
        grep -E "error|FAILED" "$OUTDIR/build.log" "$OUTDIR/configure.log" 2>/dev/null | head -30
        note "build: FAILED in part ($(( $(date +%s) - t0 )) s, see build.log)"
        if [ ! -x "$BUILD/test_cuda_qmm" ]; then printf '%s\n' "${summary[@]}"; exit 1; fi
    fi
fi

if want test; then
    scripts/run-tests.sh "$BUILD" >"$OUTDIR/ctest.log" 2>&1
    rc=$?
    grep -E "tests passed|tests failed|Failed|\*\*\*|checks:" "$OUTDIR/ctest.log" | tail -15
    note "ctest: rc=$rc, $(grep -E '% tests passed' "$OUTDIR/ctest.log" | tail -1)"
fi

if want sanitize; then
    for tool in memcheck racecheck; do
        for t in test_cuda_ops test_cuda_qmm; do
            [ -x "$BUILD/$t" ] || continue
            ZMLX_TEST_QUICK=1 timeout 300 compute-sanitizer --tool "$tool" --error-exitcode 9 \
                "$BUILD/$t" >"$OUTDIR/san-$tool-$t.log" 2>&1
            rc=$?
            note "compute-sanitizer $tool $t: rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUTDIR/san-$tool-$t.log" | tail -1)"
        done
    done
fi

if want bench; then
    for s in $SHAPES; do
        "$BUILD/zmlx" bench moe-layer --backend cuda --shape "$s" --tokens "$TOKENS" --layers "$LAYERS" \
            --json "$OUTDIR/moe-layer-cuda-$s.json" >"$OUTDIR/bench-$s.txt" 2>"$OUTDIR/bench-$s.err"
        note "bench $s: rc=$?"
    done
fi

MODEL_DIR=${MODEL_DIR:-$BUILD/qwen3-30b-a3b-random}
full_model() {
    if [ ! -f "$MODEL_DIR/config.json" ]; then
        t0=$(date +%s)
        "$BUILD/zmlx" make-tiny --preset qwen3-30b-a3b --out "$MODEL_DIR" >"$OUTDIR/make-tiny.log" 2>&1
        note "make-tiny qwen3-30b-a3b: rc=$? ($(( $(date +%s) - t0 )) s)"
    fi
}

if want decode; then
    full_model
    for p in ${DECODE_PROMPTS:-512 4000}; do
        "$BUILD/zmlx" bench decode --model "$MODEL_DIR" --backend cuda --prompt-tokens "$p" \
            --tokens "${DECODE_TOKENS:-256}" --json "$OUTDIR/decode-cuda-qwen3-30b-a3b-p$p.json" \
            >"$OUTDIR/decode-p$p.txt" 2>"$OUTDIR/decode-p$p.err"
        note "bench decode qwen3-30b-a3b prompt $p: rc=$?"
    done
fi

if want profile; then
    # ncu over one eager token (ZMLX_NO_GRAPH: kernel by kernel): every kernel
    # of the first layers at position 0, then attention at position 512
    full_model
    run1() { ZMLX_NO_GRAPH=1 ncu --clock-control none --section SpeedOfLight "$@"; }
    run1 --launch-count 40 "$BUILD/zmlx" bench decode --model "$MODEL_DIR" --backend cuda \
        --prompt-tokens 1 --tokens 1 --no-baseline >"$OUTDIR/ncu-step.txt" 2>&1
    run1 --kernel-name-base demangled --kernel-name 'regex:k_attn<' --launch-skip 192 --launch-count 3 \
        "$BUILD/zmlx" bench decode --model "$MODEL_DIR" --backend cuda --prompt-tokens 512 --tokens 1 \
        --no-baseline >"$OUTDIR/ncu-attn512.txt" 2>&1
    for f in ncu-step ncu-attn512; do
        echo "-- $f"
        awk '/^  [a-zA-Z_].*\(/ { name = $1 } /Duration/ { print name, $(NF-1), $NF }' "$OUTDIR/$f.txt"
    done | tee "$OUTDIR/ncu-summary.txt"
    note "profile: see ncu-summary.txt"
fi

# lfm2_moe against transformers' Lfm2Moe (scripts/hf-reference.py): a small
# random checkpoint, zmlx's greedy ids on CUDA and on the reference backend,
# each checked token by token; then `bench decode --preset lfm2-8b-a1b`.
if want lfm2; then
    LD=$OUTDIR/lfm2-ref
    rm -rf "$LD"
    "$BUILD/zmlx" make-tiny --arch lfm2_moe --hidden 256 --heads 8 --head-dim 32 --kv-heads 2 --experts 16 \
        --top-k 4 --moe-inter 128 --dense-inter 256 --vocab 512 --out "$LD" >/dev/null
    prompt="1 5 9 200 33 7 77 301 12 4 99 150 480 2 64"
    for b in cuda cpu-ref; do
        { echo "$prompt"; "$BUILD/zmlx" generate "$LD" --prompt-ids "$prompt" --max-tokens 48 --ignore-eos \
            --backend $b; } >"$OUTDIR/lfm2-ids-$b.txt" 2>"$OUTDIR/lfm2-gen-$b.err"
        python3 scripts/hf-reference.py "$LD" "$OUTDIR/lfm2-ids-$b.txt" 2>&1 | tee "$OUTDIR/lfm2-ref-$b.txt" | tail -3
        note "lfm2 vs transformers ($b): rc=${PIPESTATUS[0]}, $(tail -1 "$OUTDIR/lfm2-ref-$b.txt")"
    done
    "$BUILD/zmlx" validate "$LD" --backend cuda --patch exact --max-tokens 200 --runs 1 --ignore-eos \
        >"$OUTDIR/lfm2-validate.txt" 2>&1
    note "lfm2 validate (cuda, 200 tokens): rc=$?, $(grep FIDELITY "$OUTDIR/lfm2-validate.txt")"
    "$BUILD/zmlx" bench decode --preset lfm2-8b-a1b --backend cuda --prompt-tokens 512 \
        --tokens "${DECODE_TOKENS:-256}" --json "$OUTDIR/decode-cuda-lfm2-8b-a1b-p512.json" \
        >"$OUTDIR/decode-lfm2.txt" 2>"$OUTDIR/decode-lfm2.err"
    note "bench decode lfm2-8b-a1b prompt 512: rc=$?"
    tail -12 "$OUTDIR/decode-lfm2.txt"
fi

if want model; then
    full_model
    "$BUILD/zmlx" validate "$MODEL_DIR" --backend cuda --patch exact --max-tokens "${TOKENS_VALIDATE:-500}" \
        --runs 1 --ignore-eos --json "$OUTDIR/validate-cuda-qwen3-30b-a3b.json" >"$OUTDIR/validate.txt" 2>&1
    note "validate qwen3-30b-a3b cuda: rc=$? $(grep -E '^FIDELITY' "$OUTDIR/validate.txt")"
fi

if [ -n "${OUT:-}" ]; then
    cp "$OUTDIR"/*.json "$OUT"/ 2>/dev/null
    tar czf "$OUT/logs.tgz" -C "$OUTDIR" $(cd "$OUTDIR" && ls | grep -v '\.json$')
fi
echo
echo "================ device-check summary"
printf '%s\n' "${summary[@]}"
for s in $SHAPES; do [ -f "$OUTDIR/bench-$s.txt" ] && cat "$OUTDIR/bench-$s.txt"; done
for f in "$OUTDIR"/decode-p*.txt; do [ -f "$f" ] && cat "$f"; done
[ -f "$OUTDIR/validate.txt" ] && sed -n '/VALIDATION REPORT/,$p' "$OUTDIR/validate.txt"
