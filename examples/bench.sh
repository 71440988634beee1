#!/usr/bin/env bash
# Benchmark cohort against b3sum, cp -r and (if installed) dvc on synthetic CT corpora.
#
#   examples/bench.sh [WORKDIR]        (default /tmp/cohort-bench; needs ~RUNS+3 GB free)
#
# Needs hyperfine and b3sum (Debian packages); dvc is optional (pip install dvc).
# Corpora: 1 GB in 2,000 CT slices of 512x512 16-bit, and 20,000 small instances.
# Every figure is the mean of hyperfine runs with a warm page cache; results go to
# WORKDIR/results/*.json and a Markdown table on stdout (pasted into docs/benchmarks.md).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/cohort-bench}
runs=${RUNS:-3}
mkdir -p "$work/results"
cd "$here"
. "$here/examples/bench_common.sh"
res="$work/results"

# Outputs of earlier runs are moved aside, not deleted, before each timed run, and the trash
# is emptied between steps followed by `sync` and 6 s of rest. This machine's ext4 has no
# journal, and then the kernel skips inodes freed in the last seconds when it allocates new
# ones (`recently_deleted`): a run right after `rm -rf` of thousands of files spent about
# half its CPU scanning past them, whichever tool it was (see docs/benchmarks.md).
trash="$work/trash"
A="$work/aside"
cat > "$A" <<EOF
#!/bin/sh
# aside PATH...: move PATHs into $trash, then flush what the last run wrote.
mkdir -p "$trash"
for p in "\$@"; do if [ -e "\$p" ]; then mv "\$p" "$trash/\$(date +%s%N)"; fi; done
sync
EOF
chmod +x "$A"
empty_trash() { rm -rf "$trash"; sync; sleep 6; }
empty_trash

for tool in hyperfine b3sum; do
  command -v $tool >/dev/null || { echo "missing $tool (apt-get install $tool)"; exit 1; }
done

bench_corpus() {
  local name=$1 kind=$2 count=$3
  local src="$work/$name"
  corpus "$src" "$kind" "$count"
  # A store left by an earlier run (packs, and the export cache: as many files again) would
  # be copied by the cp -r baselines below: start from the bare corpus.
  rm -rf "$src/.cohort"
  local files bytes
  files=$(find "$src" -type f -name '*.dcm' | wc -l)
  bytes=$(du -sb --exclude=.cohort "$src" | cut -f1)
  echo "## $name: $files files, $((bytes / 1000000)) MB" >&2

  # Baselines.
  hyperfine -N --runs "$runs" --export-json "$res/$name-b3sum.json" \
    "bash -c 'find $src -name \"*.dcm\" -print0 | xargs -0 b3sum > /dev/null'" >&2
  hyperfine --runs "$runs" --prepare "$A $work/cp-out" --export-json "$res/$name-cp.json" \
    "cp -r $src $work/cp-out" >&2
  empty_trash
  # cp -r leaves its copy in the page cache; cohort makes its pack durable before it reports
  # a commit. This is the like-for-like copy.
  hyperfine --runs "$runs" --prepare "$A $work/cp-out" --export-json "$res/$name-cp-sync.json" \
    "cp -r $src $work/cp-out && sync" >&2
  empty_trash

  # cohort init + commit of a fresh copy (the working tree is the corpus itself).
  hyperfine --runs "$runs" --prepare "$A $src/.cohort" --export-json "$res/$name-commit.json" \
    "cd $src && $C -q init >/dev/null && $C -q commit -m import >/dev/null" >&2
  empty_trash
  # Leave a committed store behind for the next steps.
  rm -rf "$src/.cohort"; (cd "$src" && $C -q init >/dev/null && $C -q commit -m import >/dev/null)
  # De-identification of the whole commit (basic profile), and how much the store grows.
  head -c 32 /dev/urandom > "$work/deid.key"
  local before_deid after_deid
  before_deid=$(du -sb "$src/.cohort/packs" | cut -f1)
  (cd "$src" && $C -q deid main --key-file "$work/deid.key" --branch deid-size >/dev/null)
  after_deid=$(du -sb "$src/.cohort/packs" | cut -f1)
  echo $((after_deid - before_deid)) > "$res/$name-deid-growth.txt"
  hyperfine --runs "$runs" --export-json "$res/$name-deid.json" \
    "$C -C $src -q deid main --key-file $work/deid.key --branch deid-bench" >&2
  sleep 2  # let the stat cache see every file as settled (racy-clean margin)
  (cd "$src" && $C -q status >/dev/null)
  hyperfine -N --warmup 1 --runs 10 --export-json "$res/$name-status-clean.json" "$C -C $src -q status" >&2

  # One file changed.
  local one
  one=$(find "$src" -name '*.dcm' | sort | sed -n 1p)  # (head would SIGPIPE sort under pipefail)
  # Edits go into the pixel data near the end of the file (the header stays valid DICOM), and
  # every edited file is restored at the end, so the corpus can be reused.
  local edited=() f
  edited=("$one" $(find "$src" -name '*.dcm' | sort | sed -n 1,10p))
  mkdir -p "$work/bak"
  for f in "${edited[@]}"; do cp "$f" "$work/bak/$(echo "$f" | tr / _)"; done
  printf 'x' | dd of="$one" bs=1 seek=$(( $(stat -c %s "$one") - 7 )) conv=notrunc status=none
  hyperfine -N --runs 10 --export-json "$res/$name-status-one.json" "$C -C $src -q status" >&2

  # Ten files changed in a second commit; diff the two commits.
  for f in $(find "$src" -name '*.dcm' | sort | sed -n 1,10p); do
    printf 'y' | dd of="$f" bs=1 seek=$(( $(stat -c %s "$f") - 5 )) conv=notrunc status=none
  done
  (cd "$src" && $C -q commit -m ten >/dev/null)
  hyperfine -N --warmup 1 --runs 10 --export-json "$res/$name-diff.json" "$C -C $src diff HEAD~1 HEAD" >&2
  (cd "$src" && $C -q checkout --force HEAD~1 >/dev/null && $C -q checkout main > /dev/null) || true

  # Export: copy, and hardlink (cold cache first run, then warm).
  hyperfine --runs "$runs" --prepare "$A $work/exp" --export-json "$res/$name-export-copy.json" \
    "$C -C $src -q export HEAD $work/exp" >&2
  empty_trash
  hyperfine --runs "$runs" --prepare "$A $work/exp $src/.cohort/cache && mkdir $src/.cohort/cache" \
    --export-json "$res/$name-export-hardlink-cold.json" \
    "$C -C $src -q export HEAD $work/exp --link hardlink" >&2
  empty_trash
  hyperfine --runs "$runs" --prepare "$A $work/exp" --export-json "$res/$name-export-hardlink.json" \
    "$C -C $src -q export HEAD $work/exp --link hardlink" >&2
  rm -rf "$work/exp"; empty_trash
  du -sb "$src/.cohort/packs" | cut -f1 > "$res/$name-packs-bytes.txt"
  echo "$bytes" > "$res/$name-bytes.txt"

  if command -v dvc >/dev/null; then
    local dv="$work/dvc-$name"
    hyperfine --runs "$runs" \
      --prepare "$A $dv && mkdir -p $dv && cp -r $src $dv/data && rm -rf $dv/data/.cohort && cd $dv && git init -q && dvc init -q && sync" \
      --export-json "$res/$name-dvc.json" "cd $dv && dvc add -q data" >&2
    rm -rf "$dv"; empty_trash
  fi
  for f in "${edited[@]}"; do cp "$work/bak/$(echo "$f" | tr / _)" "$f"; done
}

bench_corpus ct ct "${CT_COUNT:-2000}"
bench_corpus small small "${SMALL_COUNT:-20000}"

python3 - "$res" <<'PY'
import json, os, sys
res = sys.argv[1]
def mean(name):
    p = os.path.join(res, name + ".json")
    if not os.path.exists(p): return None
    return json.load(open(p))["results"][0]["mean"]
rows = [("b3sum (hash only)", "b3sum"), ("cp -r", "cp"), ("cp -r && sync", "cp-sync"), ("dvc add", "dvc"), ("cohort init+commit", "commit"),
        ("cohort deid (basic profile)", "deid"), ("cohort status, no change", "status-clean"), ("cohort status, one file changed", "status-one"),
        ("cohort diff, 10 files differ", "diff"), ("cohort export (copy)", "export-copy"),
        ("cohort export --link hardlink, cold (fills the cache)", "export-hardlink-cold"),
        ("cohort export --link hardlink, warm", "export-hardlink")]
print("| operation | 1 GB, 2,000 CT slices | 20,000 small files |")
print("|---|---|---|")
for label, key in rows:
    cells = []
    for corpus in ("ct", "small"):
        m = mean(f"{corpus}-{key}")
        cells.append("n/a" if m is None else (f"{m*1000:.0f} ms" if m < 1 else f"{m:.2f} s"))
    print(f"| {label} | {cells[0]} | {cells[1]} |")
for corpus in ("ct", "small"):
    try:
        b = int(open(os.path.join(res, f"{corpus}-bytes.txt")).read()); p = int(open(os.path.join(res, f"{corpus}-packs-bytes.txt")).read())
        g = int(open(os.path.join(res, f"{corpus}-deid-growth.txt")).read())
        print(f"\n{corpus}: dataset {b/1e6:.0f} MB, store after all steps {p/1e6:.0f} MB; one deid run grew the store by {g/1e6:.2f} MB ({100*g/b:.2f}% of the dataset)")
    except OSError: pass
PY
