#!/usr/bin/env bash
# Search benchmarks (issue 10): supernet training samples/s on the KWS space
# against the largest network it holds (same batch, alternating steps; the
# target is a supernet step at most 1.5x the largest network's), and the
# wall time of the README's search command (target: under 5 minutes on 2
# cores, with a network that fits stm32f446re and the file's op budget).
# With PICKS=1 also the accuracy of --pick min, random:1 and max trained
# with the same recipe on the built-in task (a few minutes more).
#
# usage: bash bench/search.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cargo build --release --quiet -p mnet-search --example supernet_throughput
./target/release/examples/supernet_throughput examples/kws.mnet --batch 32 --steps 10
out=$(mktemp -d)
start=$(date +%s.%N)
./target/release/mnet search examples/kws.mnet --data synthetic-kws --quick -o "$out/search" 2>/dev/null | sed -n '1,2p'
end=$(date +%s.%N)
awk -v a="$start" -v b="$end" 'BEGIN { printf "readme_search_seconds: %.1f\n", b - a }'
python3 - "$out/search/search.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["result"]
print(f"result: ops {r['ops']}, flash {r['flash']}, sram {r['sram']} (arena {r['arena']}), "
      f"over budget: {r['over_budget'] or 'none'}, float {r['held_out_float_accuracy']:.3f}, int8 {r['held_out_int8_accuracy']:.3f}")
PY
if [ "${PICKS:-0}" = 1 ]; then
    for pick in min random:1 max; do
        ./target/release/mnet train examples/kws.mnet --pick "$pick" --data synthetic-kws:2048 --epochs 5 -o "$out/$pick" 2>/dev/null | sed "s/^/--pick $pick: /"
    done
fi
rm -rf "$out"
