# Sourced by the benchmark scripts (bench.sh, bench_pairs.sh, bench_scale.sh), after they set
# `here` (the repository) and cd into it: builds the binaries they time, and makes corpora.
cargo build --release --quiet --example gen_corpus --bin cohort
C="$here/target/release/cohort"
G="$here/target/release/examples/gen_corpus"
export COHORT_USER=bench

# corpus DIR KIND COUNT: generate the synthetic corpus into DIR unless a complete one is there.
corpus() {
  if [ ! -f "$1/.complete" ]; then
    rm -rf "$1"; "$G" "$1" "$2" "$3"; touch "$1/.complete"
  fi
}
