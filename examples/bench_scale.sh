#!/usr/bin/env bash
# How cohort scales with the number of files: time and peak memory of each everyday command
# on N small DICOM instances (64x64, about 10 KB each; default 200,000, about 2.4 GB).
#
#   examples/bench_scale.sh [COUNT] [WORKDIR]     (default 200000 /tmp/cohort-scale)
#
# Each command runs once under GNU time (/usr/bin/time, Debian package `time`), after the
# same commands warmed the page cache; the table (seconds, peak RSS) goes to stdout and is
# pasted into docs/benchmarks.md. Run it twice at two counts to see how each figure grows.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
count=${1:-200000}
work=${2:-/tmp/cohort-scale}
cd "$here"
. "$here/examples/bench_common.sh"
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time (apt-get install time)"; exit 1; }

src="$work/small-$count"
corpus "$src" small "$count"
# The store and export of an earlier run are moved aside and deleted at the end, not before:
# on ext4 without a journal, files created right after an rm -rf of many others pay for a
# scan past the freed inodes (see docs/benchmarks.md, session 7).
rm -rf "$work/old"; mkdir -p "$work/old"
for d in "$src/.cohort" "$work/exp"; do
  if [ -e "$d" ]; then mv "$d" "$work/old/$(basename "$d")"; fi
done
cd "$src"
out="$work/scale-$count.tsv"
: > "$out"
# measure NAME CMD...: one run, wall seconds and peak RSS (MB) into the table.
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" > /dev/null
  read -r secs kb < "$work/time.txt"
  printf '%s\t%s\t%s\n' "$name" "$secs" "$((kb / 1024))" >> "$out"
}
sync
"$C" -q init > /dev/null
measure "commit (from empty)" "$C" -q commit -m import
sleep 2  # let the stat cache see every file as settled (racy-clean margin)
"$C" -q status > /dev/null
measure "status, no change" "$C" -q status
one=$(find "$src" -name '*.dcm' | sort | sed -n 1p)
# A pixel byte changes (the file stays DICOM of the same length; a different value each run).
off=$(( $(stat -c %s "$one") - 7 ))
old=$(od -An -tu1 -j "$off" -N1 "$one" | tr -d ' ')
printf "\\$(printf %o $(( (old + 1) % 256 )))" | dd of="$one" bs=1 seek="$off" conv=notrunc status=none
measure "status, one file changed" "$C" -q status
measure "commit, one file changed" "$C" -q commit -m one
measure "diff HEAD~1 HEAD" "$C" diff HEAD~1 HEAD
measure "log" "$C" log
measure "ls HEAD --json" "$C" ls HEAD --json
measure "du" "$C" du
measure "fsck" "$C" -q fsck
measure "export --link hardlink, cold" "$C" -q export HEAD "$work/exp" --link hardlink
rm -rf "$work/exp" "$work/old"

files=$(find "$src" -name '*.dcm' | wc -l)  # (the .complete marker is committed too)
echo "| $files files | seconds | peak RSS (MB) |"
echo "|---|---|---|"
awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$out"
