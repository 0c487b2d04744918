#!/usr/bin/env bash
# The SD 1.5-size UNet (random weights) in nsync / candle, side by side with diffusers /
# PyTorch on the CPU, with the same thread count: one guided sampling step at 512 px,
# one Textual Inversion step and one NSYNC (ctoa: three passes) step at 256 px.
#
#   bash bench/sd.sh                                  # every step, 2 threads, best of 1
#   bash bench/sd.sh --threads 4 --repeats 2          # any `nsync bench sd` option works
#   bash bench/sd.sh --steps-only train
#
# Builds nsync (release), runs bench/sd_reference.py (PyTorch; the Python of
# $NSYNC_BENCH_PYTHON, else /root/.venvs/nsync-dev, else python3), then `nsync bench sd`,
# one after the other, never at once, and writes the Markdown report to target/bench-sd.md
# and both sides' JSON to target/bench-sd-{reference,nsync}.json. Takes several minutes
# and about 15 GB of memory at peak (candle's training step).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

threads=2
repeats=1
steps=both
args=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --threads) threads=$2; shift 2 ;;
    --threads=*) threads=${1#*=}; shift ;;
    --repeats) repeats=$2; shift 2 ;;
    --repeats=*) repeats=${1#*=}; shift ;;
    --steps-only) steps=$2; shift 2 ;;
    --steps-only=*) steps=${1#*=}; shift ;;
    *) shift ;;
    esac
done

python=${NSYNC_BENCH_PYTHON:-}
if [[ -z "$python" ]]; then
    if [[ -x /root/.venvs/nsync-dev/bin/python ]]; then
        python=/root/.venvs/nsync-dev/bin/python
    else
        python=python3
    fi
fi

echo "building nsync (release)…" >&2
cargo build --release

mkdir -p "$root/target"
reference="$root/target/bench-sd-reference.json"
rm -f "$reference"
ref_args=()
if "$python" "$root/bench/sd_reference.py" --threads "$threads" --repeats "$repeats" \
    --steps-only "$steps" --out "$reference" >/dev/null; then
    ref_args=(--reference-json "$reference")
else
    echo "warning: the PyTorch side failed (needs torch, diffusers, transformers in $python); reporting nsync alone" >&2
fi

"$root/target/release/nsync" bench sd "${args[@]}" "${ref_args[@]}" \
    --json-out "$root/target/bench-sd-nsync.json" | tee "$root/target/bench-sd.md"
echo "report written to target/bench-sd.md" >&2
