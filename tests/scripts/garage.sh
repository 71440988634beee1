#!/usr/bin/env bash
# Start a single-node Garage S3 server on loopback for tests and benchmarks, with one bucket
# and one key. Usage: tests/scripts/garage.sh DIR [S3_PORT]
# Prints shell assignments (eval them): COHORT_TEST_S3_URL, _ENDPOINT, _KEY, _SECRET, GARAGE_PID.
# Needs `garage` on PATH (cargo install --locked garage). Stop: kill "$GARAGE_PID".
set -euo pipefail
dir=${1:?usage: $0 DIR [S3_PORT]}
port=${2:-13900}
rpc=$((port + 1))
admin=$((port + 3))
command -v garage >/dev/null || { echo "garage.sh: garage not found (cargo install --locked garage)" >&2; exit 1; }
mkdir -p "$dir/meta" "$dir/data"
dir=$(cd "$dir" && pwd)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
g() { garage -c "$dir/garage.toml" "$@"; }
nohup garage -c "$dir/garage.toml" server > "$dir/garage.log" 2>&1 < /dev/null &
pid=$!
for _ in $(seq 1 100); do
  if g node id -q > "$dir/node" 2>/dev/null; then break; fi
  kill -0 "$pid" 2>/dev/null || { echo "garage.sh: garage exited; log:" >&2; tail -20 "$dir/garage.log" >&2; exit 1; }
  sleep 0.2
done
node=$(cut -d@ -f1 < "$dir/node")
g layout assign -z dc1 -c 1G "$node" > /dev/null
g layout apply --version 1 > /dev/null
g bucket create cohort-test > /dev/null
g key create cohort-test-key > "$dir/key.txt"
key_id=$(awk '/Key ID/ {print $NF}' "$dir/key.txt")
key_secret=$(awk '/Secret key/ {print $NF}' "$dir/key.txt")
g bucket allow --read --write --owner cohort-test --key cohort-test-key > /dev/null
# Wait until the S3 API answers.
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.2
done
echo "COHORT_TEST_S3_URL=s3://cohort-test/ci"
echo "COHORT_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
echo "COHORT_TEST_S3_KEY=$key_id"
echo "COHORT_TEST_S3_SECRET=$key_secret"
echo "GARAGE_PID=$pid"
