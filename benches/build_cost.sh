#!/usr/bin/env bash
# What `#[traced]` costs at build time: a generated crate of N functions,
# plain and traced, each built in release; prints the crate's own compile
# time (dependencies built first, then the crate alone, best of ROUNDS) and
# the `.text` size of its binary, and the ratios, in two setups:
#
# - `registry`: main only asks the agent for its callsites, so the traced
#   binary also pulls in the recording runtime (sessions, rings, the
#   profiler) that the plain one leaves out;
# - `node`: main starts the agent's node, as a service that nodetrace
#   attaches to does, so both carry the runtime and the difference is what
#   tracing the functions adds.
#
#   bash benches/build_cost.sh [N] [ROUNDS]      # default 200 functions, 3 rounds
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
rounds=${2:-3}
agent=$(pwd)/agent
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="$work/target"

generate() { # kind dir setup
    local kind=$1 dir=$2 setup=$3 attr=""
    [ "$kind" = traced ] && attr="#[nodetrace_agent::traced]"
    mkdir -p "$dir/src"
    cat >"$dir/Cargo.toml" <<EOF
[package]
name = "gen_$kind"
version = "0.1.0"
edition = "2024"
[dependencies]
nodetrace-agent = { path = "$agent" }
[workspace]
EOF
    {
        echo "use std::hint::black_box;"
        for i in $(seq 1 "$n"); do
            cat <<EOF
$attr
#[inline(never)]
pub fn f$i(a: u64, b: &str) -> Result<u64, String> {
    if b.is_empty() {
        return Err(format!("empty at {}", a));
    }
    let v: Vec<u64> = (0..a % 7).map(|x| x * $i).collect();
    Ok(v.iter().sum::<u64>() + b.len() as u64)
}
EOF
        done
        echo "fn main() {"
        echo "    let mut total = 0u64;"
        for i in $(seq 1 "$n"); do
            echo "    total += f$i(black_box($i), black_box(\"x\")).unwrap_or(0);"
        done
        if [ "$setup" = node ]; then
            echo "    nodetrace_agent::node::start(nodetrace_agent::node::NodeConfig::new(\"gen@localhost\")).unwrap();"
        fi
        echo "    println!(\"{total} {}\", nodetrace_agent::callsites().len());"
        echo "}"
    } >"$dir/src/main.rs"
}

measure() { # kind setup -> "seconds text_bytes"
    local kind=$1 setup=$2 dir="$work/$2/$1" best=""
    generate "$kind" "$dir" "$setup"
    cargo build --release --quiet --manifest-path "$dir/Cargo.toml" 2>/dev/null
    for _ in $(seq 1 "$rounds"); do
        touch "$dir/src/main.rs"
        local t0 t1 s
        t0=$(date +%s.%N)
        cargo build --release --quiet --manifest-path "$dir/Cargo.toml"
        t1=$(date +%s.%N)
        s=$(echo "$t1 - $t0" | bc)
        if [ -z "$best" ] || [ "$(echo "$s < $best" | bc)" = 1 ]; then best=$s; fi
    done
    local text
    text=$(size -A "$CARGO_TARGET_DIR/release/gen_$kind" | awk '$1 == ".text" { print $2 }')
    echo "$best $text"
}

for setup in registry node; do
    echo "$setup: building $n functions, plain and traced, best of $rounds..." >&2
    read -r plain_s plain_text < <(measure plain "$setup")
    read -r traced_s traced_text < <(measure traced "$setup")
    echo "$setup"
    printf '  plain:  %6.2f s  .text %9d B\n' "$plain_s" "$plain_text"
    printf '  traced: %6.2f s  .text %9d B\n' "$traced_s" "$traced_text"
    printf '  ratio:  %6.2fx build, %.2fx .text (%d B more per function)\n' \
        "$(echo "$traced_s / $plain_s" | bc -l)" "$(echo "$traced_text / $plain_text" | bc -l)" \
        "$(( (traced_text - plain_text) / n ))"
done
