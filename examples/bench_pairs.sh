#!/usr/bin/env bash
# Paired runs: cohort's two steps that write a whole dataset (init+commit, and the first
# export with --link hardlink, which fills the store's cache) against `cp -r` of the same
# files, one right after the other, in alternating order.
#
#   examples/bench_pairs.sh [WORKDIR]      (default /tmp/cohort-bench; PAIRS=6 SETTLE=2)
#
# Why pairs: on this virtual disk the time of `cp -r` itself drifts by a factor of five within
# an hour (0.6 s to 3.5 s for the same 1 GB), with what the file system went through before
# (see docs/benchmarks.md). bench.sh times all runs of one command, then all runs of the
# next, minutes apart; here both sides of a pair meet the same state, and the order
# alternates. Before every timed command, `sync` and SETTLE seconds of rest, so no command
# pays for the write-back of the one before it.
#
# Outputs are moved aside, not deleted, until the end: ext4 without a journal (this VM's)
# skips recently freed inodes when it allocates new ones (`recently_deleted`, 45-60 % of a
# run's samples in `perf`), so a run right after `rm -rf` of 2,000 files times that scan,
# not the command.
# Needs about 2 GB free per pair, and 1 GB more.
#
# Uses the 1 GB CT corpus of bench.sh (made here if missing). Prints one line per run and
# a summary; the lines also go to WORKDIR/results/pairs.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/cohort-bench}
pairs=${PAIRS:-4}
settle=${SETTLE:-2}
cd "$here"
. "$here/examples/bench_common.sh"
src="$work/ct"
mkdir -p "$work/results"
corpus "$src" ct "${CT_COUNT:-2000}"
rm -rf "$work/trash" "$work/cp-out" "$work/exp"; sync; sleep 6
need=$(( (2 * pairs + 1) * 1024 * 1024 ))
free=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
if [ "$free" -lt "$need" ]; then
  echo "bench_pairs.sh: $work has $((free / 1024 / 1024)) GB free, needs $((need / 1024 / 1024)) GB for $pairs pairs" >&2
  exit 1
fi
log="$work/results/pairs.txt"
: > "$log"

# run LABEL CMD...: time one command; append "LABEL wall user sys" to the log.
run() {
  local label=$1; shift
  local t
  t=$(mktemp)
  /usr/bin/time -f "%e %U %S" -o "$t" "$@" >/dev/null 2>&1
  printf '%-12s %s\n' "$label" "$(cat "$t")" | tee -a "$log"
  rm -f "$t"
}
settle() { sync; sleep "$settle"; }

# clean: move what either side of a pair wrote (the copy, the export, the store's cache)
# into the trash, so both start from the same state.
n=0
clean() {
  n=$((n + 1)); mkdir -p "$work/trash/$n"
  for d in "$work/cp-out" "$work/exp" "$src/.cohort/cache"; do
    if [ -e "$d" ]; then mv "$d" "$work/trash/$n/$(basename "$d")"; fi
  done
  if [ -d "$src/.cohort" ]; then mkdir "$src/.cohort/cache"; fi
}
# The glob leaves out dot files: the store is not part of what a commit reads.
copy() {
  clean; mkdir "$work/cp-out"; settle
  run "$1" cp -r "$src"/* "$work/cp-out/"
}
commit() {
  clean; if [ -d "$src/.cohort" ]; then mv "$src/.cohort" "$work/trash/$n/store"; fi; (cd "$src" && "$C" -q init >/dev/null); settle
  run commit bash -c "cd '$src' && '$C' -q commit -m import"
}
export_cold() {
  clean; settle
  run export-cold "$C" -C "$src" -q export HEAD "$work/exp" --link hardlink
}

echo "# commit vs cp -r ($pairs pairs, settle ${settle}s): label wall_s user_s sys_s" | tee -a "$log"
for i in $(seq "$pairs"); do
  if [ $((i % 2)) = 1 ]; then copy cp-commit; commit; else commit; copy cp-commit; fi
done
# Empty the trash between the two halves (the rest after it lets ext4 reuse those inodes).
rm -rf "$work/trash"; sync; sleep 6
echo "# export --link hardlink into an empty cache vs cp -r" | tee -a "$log"
for i in $(seq "$pairs"); do
  if [ $((i % 2)) = 1 ]; then copy cp-export; export_cold; else export_cold; copy cp-export; fi
done
clean; rm -rf "$work/trash"

python3 - "$log" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if not l.startswith("#")]
def side(label): return [float(r[1]) for r in rows if r[0] == label]
for step, base in (("commit", "cp-commit"), ("export-cold", "cp-export")):
    a, b = side(step), side(base)
    wins = sum(x < y for x, y in zip(a, b))
    print(f"{step:12} median {statistics.median(a):.2f} s ({min(a):.2f}-{max(a):.2f}); "
          f"cp -r median {statistics.median(b):.2f} s ({min(b):.2f}-{max(b):.2f}); "
          f"faster in {wins} of {len(a)} pairs")
PY
