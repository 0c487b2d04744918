#!/usr/bin/env bash
# The engine benchmark with DVC and b3sum side by side.
#
#   bash bench/engine.sh                 # 10,000 items
#   bash bench/engine.sh --items 2000    # quicker; any `nsync bench engine` option works
#
# Builds nsync (release), installs DVC into target/bench-venv and b3sum if missing, runs
# `nsync bench engine`, and writes the Markdown report to target/bench-engine.md as well.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

echo "building nsync (release)…" >&2
cargo build --release

venv="$root/target/bench-venv"
if [[ ! -x "$venv/bin/dvc" ]]; then
    echo "installing DVC into $venv…" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check dvc
fi
dvc="$venv/bin/dvc"

if command -v b3sum >/dev/null 2>&1; then
    b3sum=$(command -v b3sum)
elif [[ -x "$root/target/bench-tools/bin/b3sum" ]]; then
    b3sum="$root/target/bench-tools/bin/b3sum"
else
    b3sum=""
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing b3sum with apt-get…" >&2
        if apt-get install -y -q b3sum >&2 ||
            { apt-get update -q >&2 && apt-get install -y -q b3sum >&2; }; then
            b3sum=$(command -v b3sum || true)
        fi
    fi
    if [[ -z "$b3sum" ]]; then
        echo "installing b3sum with cargo into target/bench-tools…" >&2
        cargo install --quiet b3sum --root "$root/target/bench-tools"
        b3sum="$root/target/bench-tools/bin/b3sum"
    fi
fi

export DVC_NO_ANALYTICS=1
"$root/target/release/nsync" bench engine --dvc "$dvc" --b3sum "$b3sum" "$@" |
    tee "$root/target/bench-engine.md"
echo "report written to target/bench-engine.md" >&2
