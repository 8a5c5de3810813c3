#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/Targets) with swiftc -sanitize=fuzzer,address against the package's
# pure sources, then runs each on its seed corpus (Fuzz/Corpus/<target>) for a bounded time.
#
#   tools/fuzz.sh                      build, run every target 60 s (CI uses FUZZ_SECONDS=15)
#   tools/fuzz.sh engine 3600          one target for an hour: longer runs find more
#   FUZZ_SECONDS=600 tools/fuzz.sh     every target ten minutes
#
# Targets: frame-parser, engine, ipvs-command, rules-file. Exits non-zero on the first crash, leak, trap or
# timeout; the input that caused it is left as .build/fuzz/artifacts/<target>/crash-* (rerun it with
# `.build/fuzz/bin/<target> FILE`). New inputs found are kept under .build/fuzz/corpus/<target>; copy the
# interesting ones into Fuzz/Corpus/<target> to keep them.
set -euo pipefail
cd "$(dirname "$0")/.."

only="${1:-}"
seconds="${2:-${FUZZ_SECONDS:-60}}"
build=.build/fuzz
mkdir -p "$build/modules" "$build/bin"
# CXDP and CXDirectorShared: the engine uses their inline helpers and structs only (a prefetch, the XDP
# metadata's layout and seal), so their headers are enough, through module maps.
root=$(pwd)
mkdir -p "$build/modules"
printf 'module CXDP {\n    header "%s/Sources/CXDP/include/cxdp.h"\n    export *\n}\n' "$root" > "$build/modules/cxdp.modulemap"
printf 'module CXDirectorShared {\n    header "%s/Sources/CXDirectorShared/include/xdirector_shared.h"\n    export *\n}\n' "$root" \
    > "$build/modules/cxdirectorshared.modulemap"
flags=(-sanitize=fuzzer,address -use-ld=lld -parse-as-library -O -g -enable-testing -swift-version 6 -I "$build/modules" -L "$build/modules"
       -Xcc "-fmodule-map-file=$build/modules/cxdp.modulemap"
       -Xcc "-fmodule-map-file=$build/modules/cxdirectorshared.modulemap" -Xcc -I -Xcc "$root/Sources/CXDirectorShared/include")

# One static library and module per layer, each compiled with the fuzzer's coverage instrumentation
# (swift-log, which the engine's connection-state file logs through, without it).
module() {
    local name="$1"; shift
    swiftc "${flags[@]}" -emit-library -static -module-name "$name" -emit-module-path "$build/modules/$name.swiftmodule" \
        -o "$build/modules/lib$name.a" "$@"
}
[ -d .build/checkouts/swift-log ] || swift package resolve >/dev/null
log_sources=$(find .build/checkouts/swift-log/Sources/Logging -name '*.swift' | sort)

# The parts of Dataplane and Control the targets reach, without the kernel-facing files (libxdp, rtnetlink).
dataplane=()
for file in ForwardingEngine ForwardingSnapshot ReplyIndex FragmentTable LocalPortAllocator TrafficStats DestinationTraffic WorkerCounters \
            ConnectionStateFile Directories DataplaneError FrameMetadata; do dataplane+=("Sources/Dataplane/$file.swift"); done
dataplane+=(Fuzz/Support/Imports.swift)
control=()
for file in IPVSCommand IPVSRequest IPVSOptions IPVSEndpoint RulesFile Configuration; do control+=("Sources/Control/$file.swift"); done
control+=(Fuzz/Support/Imports.swift)

declare -A sources=([frame-parser]=FrameParserFuzz [engine]=EngineFuzz [ipvs-command]=IPVSCommandFuzz [rules-file]=RulesFileFuzz)
declare -A libraries=([frame-parser]="Packet" [engine]="Dataplane Logging Scheduling Packet"
                      [ipvs-command]="Control Scheduling Packet" [rules-file]="Control Scheduling Packet")
targets=(frame-parser engine ipvs-command rules-file)
[ -n "$only" ] && targets=("$only")
needed=" $(for target in "${targets[@]}"; do echo "${libraries[$target]:-}"; done | tr '\n' ' ') "

echo "fuzz: building (swiftc -sanitize=fuzzer,address)"
module Packet Sources/Packet/*.swift
[[ "$needed" == *" Scheduling "* ]] && module Scheduling Sources/Scheduling/*.swift
if [[ "$needed" == *" Logging "* ]]; then
    # shellcheck disable=SC2086
    swiftc -O -parse-as-library -swift-version 5 -package-name swift_log -emit-library -static -module-name Logging \
        -emit-module-path "$build/modules/Logging.swiftmodule" -o "$build/modules/libLogging.a" $log_sources
fi
[[ "$needed" == *" Dataplane "* ]] && module Dataplane "${dataplane[@]}"
[[ "$needed" == *" Control "* ]] && module Control "${control[@]}"

for target in "${targets[@]}"; do
    [ -n "${sources[$target]:-}" ] || { echo "fuzz: no target $target (${!sources[*]})" >&2; exit 2; }
    links=()
    for library in ${libraries[$target]}; do links+=("-l$library"); done
    swiftc "${flags[@]}" "Fuzz/Targets/${sources[$target]}.swift" "${links[@]}" -o "$build/bin/$target"
done

status=0
for target in "${targets[@]}"; do
    corpus="$build/corpus/$target"
    artifacts="$build/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "fuzz: $target for ${seconds} s"
    if ! "$build/bin/$target" "$corpus" "Fuzz/Corpus/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            -max_len=4096 -artifact_prefix="$artifacts/" -print_final_stats=1 >"$build/$target.log" 2>&1; then
        tail -40 "$build/$target.log" >&2
        echo "fuzz: $target FAILED: the input is in $artifacts" >&2
        status=1
    else
        grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$build/$target.log" | sed "s/^/fuzz: $target /" || true
    fi
done
exit $status
