#!/usr/bin/env bash
# Checks that the module graph runs one way: prints every module → module import edge of
# src/ (top-level modules: `crate::x` and `super::x` paths in the code, `lang_agent::x` in
# main.rs) and fails when one goes up the layer order below, when a module has no layer, when
# anything but main.rs, config.rs and the commands reads cli, or when the edges make a cycle.
#
# Test code (a `#[cfg(test)] mod tests { … }`, which closes its file, and `tests.rs` files) is
# not counted: a test may check how a lower layer's error looks to a higher one. Comments are
# not counted either.
#
# Usage: scripts/check-layers.sh [-q]   (-q: print only problems)
set -euo pipefail
cd "$(dirname "$0")/.."

# Top to bottom. A module may import any module of a lower layer. Within a layer only the
# layers marked `+` allow imports (the commands use config and cli; leaves use each other),
# and never in a cycle.
LAYERS=(
    "+ main cli config commands fuzzing" # the binary, its command line, its commands; fuzz entries
    "- api viewer export mock_llm eval stress" # surfaces and whole features, independent of each other
    "- agent"                      # turns: the runner, the graphs
    "- tools llm"                  # what the agent calls
    "- store"                      # the SQLite log
    "+ http auth pg redact logging sse_events metrics heap" # shared leaves
)
# Only these may read cli (the command line): the rest gets plain settings.
CLI_READERS=" main config commands "

quiet=false
[[ "${1:-}" == "-q" ]] && quiet=true

declare -A layer_of same_ok
for i in "${!LAYERS[@]}"; do
    read -r mark modules <<<"${LAYERS[$i]%%#*}"
    for m in $modules; do
        layer_of[$m]=$i
        same_ok[$m]=$mark
    done
done

# module<TAB>imported module, one line per reference.
edges() {
    local file module depth
    while IFS= read -r file; do
        case "$file" in
        src/lib.rs | */tests.rs) continue ;;
        src/main.rs) module=main ;;
        *)
            module=${file#src/}
            module=${module%%/*}
            module=${module%.rs}
            ;;
        esac
        depth=$(tr -cd / <<<"${file#src/}" | wc -c)
        # Up to a test module, without comments, as one line so that grouped imports spanning
        # lines (`use crate::{\n a,\n b::c,\n};`) read as one.
        awk '
            function out(line) { sub(/\/\/.*/, "", line); printf "%s ", line }
            test {
                test = 0
                if ($0 ~ /^[[:space:]]*mod [A-Za-z_]+[[:space:]]*\{/) exit
                if ($0 ~ /^[[:space:]]*mod [A-Za-z_]+;/) next
            }
            /^[[:space:]]*#\[cfg\(test\)\][[:space:]]*$/ { test = 1; next }
            { out($0) }' "$file" |
            awk -v module="$module" -v top="$((depth == 0))" '
            function emit(name) { if (name != "" && name != "self") print module "\t" name }
            {
                text = $0
                # crate::{a, b::c, d::{e, f}}: the first name of each top-level item.
                while (match(text, /(crate|lang_agent)::\{/)) {
                    rest = substr(text, RSTART + RLENGTH)
                    nest = 1; item = ""; taking = 1
                    for (i = 1; i <= length(rest) && nest > 0; i++) {
                        c = substr(rest, i, 1)
                        if (c == "{") nest++
                        else if (c == "}") { nest--; if (nest == 0) break }
                        else if (c == "," && nest == 1) { emit(item); item = ""; taking = 1; continue }
                        if (nest == 1 && taking) {
                            if (c ~ /[A-Za-z0-9_]/) item = item c
                            else if (item != "") taking = 0
                        }
                    }
                    emit(item)
                    text = substr(rest, i + 1)
                }
                # crate::a, lang_agent::a (main.rs), and super::a in a top-level file.
                text = $0
                pattern = top ? "(crate|lang_agent|super)::[A-Za-z_][A-Za-z0-9_]*" \
                              : "(crate|lang_agent)::[A-Za-z_][A-Za-z0-9_]*"
                while (match(text, pattern)) {
                    ref = substr(text, RSTART, RLENGTH)
                    sub(/^[a-z_]+::/, "", ref)
                    emit(ref)
                    text = substr(text, RSTART + RLENGTH)
                }
            }'
    done < <(find src -name '*.rs' | sort)
}

problems=0
problem() {
    echo "check-layers: $*" >&2
    problems=$((problems + 1))
}

mapfile -t all < <(edges | sort -u)
declare -a graph=()
declare -A told=()
for edge in "${all[@]}"; do
    from=${edge%%$'\t'*}
    to=${edge#*$'\t'}
    [[ "$from" == "$to" ]] && continue
    # Names that are not modules: items of lib.rs or of a top-level file reached by `super::`.
    if [[ ! -e "src/$to.rs" && ! -d "src/$to" ]]; then
        continue
    fi
    graph+=("$from $to")
    verdict=ok
    if [[ -z "${layer_of[$from]:-}" || -z "${layer_of[$to]:-}" ]]; then
        for m in "$from" "$to"; do
            if [[ -z "${layer_of[$m]:-}" && -z "${told[$m]:-}" ]]; then
                problem "module $m has no layer: add it to LAYERS in scripts/check-layers.sh"
                told[$m]=1
            fi
        done
        verdict="NO LAYER"
    elif ((layer_of[$to] < layer_of[$from])); then
        problem "$from imports $to, which is above it"
        verdict="UPWARD"
    elif ((layer_of[$to] == layer_of[$from])) && [[ "${same_ok[$from]}" != "+" ]]; then
        problem "$from imports $to, in its own layer"
        verdict="SAME LAYER"
    fi
    if [[ "$to" == cli && "$CLI_READERS" != *" $from "* ]]; then
        problem "$from reads cli; only${CLI_READERS}do (give it plain settings)"
        verdict="READS CLI"
    fi
    $quiet || printf '%-12s → %-12s %s\n' "$from" "$to" "$verdict"
done

# tsort names the modules of each loop in the graph on stderr (`tsort: name`).
loops=$(printf '%s\n' "${graph[@]}" | tsort 2>&1 >/dev/null || true)
if [[ -n "$loops" ]]; then
    in_loops=$(sed -n 's/^tsort: \([a-z_]*\)$/\1/p' <<<"$loops" | sort -u | tr '\n' ' ')
    problem "the module graph has cycles through: $in_loops"
fi

if ((problems > 0)); then
    echo "check-layers: $problems problem(s); the layer order is in scripts/check-layers.sh and ARCHITECTURE.md" >&2
    exit 1
fi
$quiet || echo "check-layers: ${#graph[@]} edges, all downward"
