#!/usr/bin/env bash
# Remote benchmark of issue #6: push and clone of 1 GB of CT slices (2,000 × 512×512 16-bit)
# to a local Garage, against a plain object_store upload loop of the same files
# (examples/s3_baseline.rs), and an unchanged second push.
#   examples/bench_remote.sh [COUNT]      (needs garage on PATH and hyperfine)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
count=${1:-2000}
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin cohort --example gen_corpus --example s3_baseline
bin="$here/target/release"
work=$(mktemp -d)
trap 'kill ${GARAGE_PID:-} 2>/dev/null || true; rm -rf "$work"' EXIT
eval "$("$here/tests/scripts/garage.sh" "$work/garage" 13950)"
export AWS_ACCESS_KEY_ID=$COHORT_TEST_S3_KEY AWS_SECRET_ACCESS_KEY=$COHORT_TEST_S3_SECRET
"$bin/examples/gen_corpus" "$work/ds" ct "$count"
cd "$work/ds"
"$bin/cohort" init > /dev/null
"$bin/cohort" commit -q -m corpus > /dev/null
echo "data: $(du -sh --exclude=.cohort . | cut -f1)"
ep=$COHORT_TEST_S3_ENDPOINT
"$bin/cohort" remote add final s3://cohort-test/final --endpoint "$ep" --region garage --allow-http
hyperfine --shell bash --runs 2 --export-markdown "$work/remote.md" \
  -n "object_store upload loop (baseline)" "$bin/examples/s3_baseline $work/ds cohort-test baseline-\$RANDOM $ep garage" \
  -n "cohort push (fresh prefix)" "$bin/cohort remote remove b >/dev/null 2>&1 || true; $bin/cohort remote add b s3://cohort-test/push-\$RANDOM --endpoint $ep --region garage --allow-http && $bin/cohort -q push b"
"$bin/cohort" -q push final
hyperfine --shell bash --runs 2 --export-markdown "$work/clone.md" \
  -n "cohort clone" "rm -rf $work/clone; $bin/cohort -q clone s3://cohort-test/final $work/clone --endpoint $ep --region garage --allow-http"
hyperfine --shell bash --runs 5 --export-markdown "$work/again.md" -n "unchanged second push" "$bin/cohort -q push final"
cat "$work/remote.md" "$work/clone.md" "$work/again.md"
