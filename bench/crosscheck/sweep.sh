#!/bin/bash
# The cross-check's full sweep (bench/RESULTS.md, fourteenth session): interleaved servers, a fresh
# server per run, 3 reps, 5 s measured; then a count check and the 20k deliveries/s latency point.
# Writes results-*.jsonl into DIR (default /tmp/crosscheck); report.py DIR prints the tables.
#     bash bench/crosscheck/sweep.sh [DIR]
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${1:-/tmp/crosscheck}
mkdir -p "$DIR"
cc -O2 -o /tmp/natter-crosscheck "$HERE/fanout.c"
cd "$HERE"
OUT=$DIR/results-sweep.jsonl
for pt in "1000 16" "1000 64" "1000 256" "1000 1024" "100 16" "100 64" "100 256" "100 2048"; do
  set -- $pt
  for rep in 1 2 3; do
    for s in natter bun probe; do
      python3 run.py $OUT $s $1 $2 --seconds 5 --tag "sweep-rep$rep" --defer-ms 25
    done
  done
done
# validation: every receiver verified per message
VOUT=$DIR/results-validate.jsonl
for s in natter bun probe; do
  python3 run.py $VOUT $s 2 1 --seconds 3 --tag "validate-2x1" --verify-every 1 --defer-ms 25
  python3 run.py $VOUT $s 100 64 --seconds 2 --tag "validate-100x64" --verify-every 1 --defer-ms 25
  python3 run.py $VOUT $s 1000 256 --seconds 2 --tag "validate-1000x256" --verify-every 1 --defer-ms 25
done
# latency point: 100 receivers, 200 msg/s paced, 10 s
LOUT=$DIR/results-latency.jsonl
for rep in 1 2; do
  for s in natter bun reference; do
    python3 run.py $LOUT $s 100 1 --rate 200 --seconds 10 --tag "latency-rep$rep" --defer-ms 25
  done
done
echo DONE
