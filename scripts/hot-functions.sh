#!/usr/bin/env bash
# Records link/hot-functions.txt: the functions a serving box runs, which build.rs has the
# release build lay out together (an idle box then keeps ~4 MiB less of its code resident).
#
# Builds the release binary, runs `serve` under valgrind's callgrind through what a box does
# (start, DashScope and OpenAI turns streamed and not, one at a time, 20 and 200 at once,
# /health and /metrics, the idle box closing readers and upstream connections and trimming its
# heap twice, a clean stop), against the fake upstream on 127.0.0.1, and lists every function
# of the binary that ran, in the order they first ran. It takes about five minutes.
#
# Run it again after a dependency update or a large change: symbol names carry a hash of
# their crate's build, so an updated crate's functions no longer match (the build skips
# names it lacks; a stale list costs memory, not correctness). Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

upstream_port=${HOT_UPSTREAM_PORT:-18599}
serve_port=${HOT_SERVE_PORT:-18588}
out=link/hot-functions.txt

cargo build --release --locked
bin=target/release/lang-agent
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" mock-llm --port "$upstream_port" --delay-ms 0 >"$work/mock.log" 2>&1 &
pids+=($!)
FAST_AUTH_KEYS=hot-key ALI_API_KEY=unused valgrind --tool=callgrind --demangle=no \
    --dump-instr=no --callgrind-out-file="$work/callgrind.out" \
    "$bin" serve --data-dir "$work/data" --base-url "http://127.0.0.1:$upstream_port/v1" \
    --port "$serve_port" --viewer-port 0 >"$work/serve.log" 2>&1 &
serve=$!
pids+=("$serve")

url="http://127.0.0.1:$serve_port"
for _ in $(seq 120); do
    curl -sf -o /dev/null "$url/health" && break
    sleep 0.5
done
curl -sf -o /dev/null "$url/health"
for api in dashscope openai; do
    for stream in "" --stream; do
        "$bin" stress --url "$url" --api "$api" --key hot-key --concurrency 1,20 \
            --requests 10,40 $stream >/dev/null
    done
done
"$bin" stress --url "$url" --api dashscope --key hot-key --concurrency 200 --requests 400 \
    --stream >/dev/null
curl -sf -o /dev/null -H "Authorization: Bearer hot-key" "$url/metrics"
# Idle: the indexer runs, the heap is trimmed, readers close after a minute, idle upstream
# connections after 90 s, and the heap is trimmed again 100 s after the first trim.
sleep 110
kill -TERM "$serve"
wait "$serve"

# callgrind names each object (ob=) and function (fn=) in full once, then by number.
awk -v binary="$(realpath "$bin")" '
    match($0, /^(c?ob|c?fn)=\([0-9]+\)/) {
        kind = substr($0, 1, index($0, "=") - 1)
        id = substr($0, RSTART + length(kind) + 2, RLENGTH - length(kind) - 3)
        name = substr($0, RLENGTH + 2)
        if (kind ~ /ob$/) { if (name != "") objects[id] = name; if (kind == "ob") current = objects[id]; next }
        if (name != "") functions[id] = name
        if (kind != "fn" || current != binary) next
        name = functions[id]
        sub(/'"'"'[0-9]+$/, "", name)     # a recursion level, not part of the name
        if (name ~ /^(0x|\()/ || name ~ /[ \t]/ || seen[name]++) next    # addresses, "(below main)"
        print name
    }' "$work/callgrind.out" >"$out.new"
mv "$out.new" "$out"
echo "hot-functions.sh: $(wc -l <"$out") functions in $out; rebuild (cargo build --release) to use them"
