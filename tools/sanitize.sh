#!/usr/bin/env bash
# The Cython engine under AddressSanitizer and UndefinedBehaviorSanitizer.
#
# Builds memscan._fast with gcc -fsanitize=address,undefined (and
# MEMSCAN_DEBUG=1: bounds checks, -O0 -g) in a copy of the tree under a
# temporary directory, never in place, then runs the engine, property and
# pagemap tests against that build, and the differential fuzzer
# (fuzz/fuzz_parsers.py, if atheris is installed) for FUZZ_SECONDS.
#
#   tools/sanitize.sh                 # FUZZ_SECONDS=60 by default, 0 skips it
#   KEEP=1 tools/sanitize.sh          # keep the temporary tree
#
# The interpreter is not instrumented, so libasan is preloaded;
# PYTHONMALLOC=malloc gives every Python object ASan's red zones (pymalloc's
# pools would hide overruns of small buffers). CPython leaks by design:
# leak detection is off. Any report aborts the run with a non-zero status.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
fuzz_seconds="${FUZZ_SECONDS:-60}"

tmp="$(mktemp -d /tmp/memscan-sanitize.XXXXXX)"
if [ -z "${KEEP:-}" ]; then
  trap 'rm -rf "$tmp"' EXIT
fi
echo "== copy of the tree: $tmp"
tar -C "$root" --exclude=build --exclude='*.so' --exclude=_fast.c --exclude=__pycache__ \
    --exclude=.hypothesis --exclude=.pytest_cache -cf - setup.py pyproject.toml README.md src tests fuzz \
  | tar -C "$tmp" -xf -

echo "== build with -fsanitize=address,undefined"
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
(cd "$tmp" && MEMSCAN_DEBUG=1 CC=gcc CFLAGS="$sanitize" LDFLAGS="$sanitize" \
   "$python" setup.py -q build_ext --inplace >build.log 2>&1) || { cat "$tmp/build.log"; exit 1; }
so="$(ls "$tmp"/src/memscan/_fast*.so)"
nm -D "$so" | grep -q __asan_report || { echo "sanitize: $so is not instrumented" >&2; exit 1; }

export LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
# Reports go to files: pytest captures the stderr of the process they abort.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1:log_path=$tmp/sanitizer"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$tmp/sanitizer"
export PYTHONMALLOC=malloc
export PYTHONPATH="$tmp/src"
cd "$tmp"
built="$("$python" -c 'import memscan, memscan._fast as f; print(memscan.IMPLEMENTATION, f.__file__)')"
[ "$built" = "cython $so" ] || { echo "sanitize: the tests would not use $so ($built)" >&2; exit 1; }

failed() {
  for report in "$tmp"/sanitizer.*; do
    [ -e "$report" ] && cat "$report" >&2
  done
  trap - EXIT
  echo "sanitize: $1; the tree, build and reports are kept in $tmp" >&2
  exit 1
}

echo "== tests on the sanitized engine"
"$python" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning --durations=5 \
  tests/test_engines.py tests/test_fuzz_engines.py tests/test_pagemap.py || failed "tests failed"

if [ "$fuzz_seconds" -gt 0 ]; then
  if "$python" -c 'import atheris' 2>/dev/null; then
    echo "== differential fuzzing on the sanitized engine, ${fuzz_seconds} s"
    set +e
    mkdir -p "$tmp/fuzz-run"
    (cd "$tmp/fuzz-run" && MEMSCAN_FUZZ_WORK="$tmp/fuzz-work" "$python" "$tmp/fuzz/fuzz_parsers.py" -max_total_time="$fuzz_seconds" \
        -print_final_stats=1 >"$tmp/fuzz.log" 2>&1)
    status=$?
    set -e
    grep -E '^(Done|stat::number_of_executed_units)' "$tmp/fuzz.log" || true
    if [ "$status" -ne 0 ]; then
      # A disagreement, another exception or a sanitizer report: libFuzzer
      # saved the input as crash-* in $tmp/fuzz-run.
      tail -n 40 "$tmp/fuzz.log" >&2
      failed "the fuzzer failed (status $status)"
    fi
  else
    echo "== atheris is not installed: no fuzzing (pip install atheris)"
  fi
fi
if ls "$tmp"/sanitizer.* >/dev/null 2>&1; then
  failed "sanitizer reports"
fi
echo "== sanitize: clean"
