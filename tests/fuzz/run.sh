#!/bin/sh
# tests/fuzz/run.sh — build the libFuzzer targets with clang (ASan + UBSan) and run each for
# FUZZ_SECONDS (default 20). Exits non-zero when a target crashes, leaks or trips a sanitizer;
# the reproducer is left in build/fuzz/ (libFuzzer prints its name).
# Run after `make` (fuzz_config links graph.c, which includes the generated build/gen/schema_sql.h).
#   FUZZ_SECONDS=60 tests/fuzz/run.sh          # longer
#   tests/fuzz/run.sh fuzz_listen              # one target
set -eu
cd "$(dirname "$0")/../.."

CLANG=${CLANG:-$(command -v clang-14 || command -v clang)}
SECONDS_PER=${FUZZ_SECONDS:-20}
OUT=build/fuzz
mkdir -p "$OUT"

CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
        -fno-sanitize-recover=undefined -Icore -Ibuild/gen $(pkg-config --cflags libuv libcurl libpq)"
LIBS="$(pkg-config --libs libuv libcurl libpq) -lhttp_parser -lm"

# target -> the sources it needs (only these: other core files may be mid-edit)
sources() {
    case "$1" in
        fuzz_httpd|fuzz_listen) echo "tests/fuzz/$1.c core/httpd_req.c core/log.c" ;;
        fuzz_jsonl) echo "tests/fuzz/$1.c core/jsonl.c core/buf.c" ;;
        fuzz_config) echo "tests/fuzz/$1.c core/config.c core/names.c core/endpoint.c core/buf.c core/log.c core/http.c core/graph.c core/db.c core/db_open.c core/utf8.c" ;;
        *) echo "unknown target $1" >&2; exit 2 ;;
    esac
}

targets=${*:-"fuzz_httpd fuzz_listen fuzz_jsonl fuzz_config"}
rc=0
for t in $targets; do
    echo "== $t: build"
    # shellcheck disable=SC2046,SC2086
    $CLANG $CFLAGS -o "$OUT/$t" $(sources "$t") $LIBS
    corpus="$OUT/corpus-$t"
    mkdir -p "$corpus"
    seeds="tests/fuzz/corpus/${t#fuzz_}"
    [ -d "$seeds" ] && cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
    set -- -max_total_time="$SECONDS_PER" -print_final_stats=1 -artifact_prefix="./$t-"
    [ -f "tests/fuzz/$t.dict" ] && set -- "$@" -dict="../../tests/fuzz/$t.dict"
    echo "== $t: run ${SECONDS_PER}s"
    set +e
    (cd "$OUT" && "./$t" "$@" "corpus-$t") > "$OUT/$t.log" 2>&1
    st=$?
    set -e
    tail -n 20 "$OUT/$t.log"
    if [ "$st" -ne 0 ]; then
        echo "FAIL $t (exit $st); log $OUT/$t.log; reproducer: $OUT/$t-*" >&2
        rc=1
    else
        echo "ok $t"
    fi
done
exit $rc
