#!/usr/bin/env bash
# Start Orthanc with the DICOMweb plugin for tests, storing everything in DIR.
#   usage: scripts/orthanc.sh DIR [HTTP_PORT] [DICOM_PORT]
# Needs: apt-get install -y orthanc orthanc-dicomweb curl
# Writes DIR/config.json, logs to DIR/orthanc.log, waits (30 s max) until GET /system answers,
# then prints the PID on stdout (also in DIR/orthanc.pid). Stop it with: kill "$(cat DIR/orthanc.pid)"
# DICOMweb root: http://127.0.0.1:HTTP_PORT/dicom-web
set -euo pipefail

dir=${1:?usage: $0 DIR [HTTP_PORT] [DICOM_PORT]}
http_port=${2:-18042}
dicom_port=${3:-14242}
plugin=${ORTHANC_DICOMWEB_PLUGIN:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}
orthanc=${ORTHANC_BIN:-Orthanc}

command -v "$orthanc" >/dev/null || { echo "orthanc.sh: $orthanc not found (apt-get install -y orthanc orthanc-dicomweb)" >&2; exit 1; }
[ -f "$plugin" ] || { echo "orthanc.sh: DICOMweb plugin $plugin not found (apt-get install -y orthanc-dicomweb)" >&2; exit 1; }
if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$http_port/system"; then
  echo "orthanc.sh: something already answers on port $http_port" >&2; exit 1
fi

mkdir -p "$dir/db"
dir=$(cd "$dir" && pwd)
cat > "$dir/config.json" <<JSON
{
  "Name": "test",
  "StorageDirectory": "$dir/db",
  "IndexDirectory": "$dir/db",
  "HttpPort": $http_port,
  "DicomPort": $dicom_port,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "Plugins": ["$plugin"],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
}
JSON

cd "$dir"
nohup "$orthanc" "$dir/config.json" >"$dir/orthanc.log" 2>&1 </dev/null &
pid=$!
echo "$pid" > "$dir/orthanc.pid"

for _ in $(seq 1 150); do   # 150 x 0.2 s = 30 s
  if curl -s -o /dev/null --fail --max-time 2 "http://127.0.0.1:$http_port/system"; then
    echo "$pid"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "orthanc.sh: Orthanc exited early; last log lines:" >&2
    tail -n 20 "$dir/orthanc.log" >&2 || true
    exit 1
  fi
  sleep 0.2
done
echo "orthanc.sh: Orthanc did not answer on port $http_port within 30 s; killing $pid" >&2
kill "$pid" 2>/dev/null || true
exit 1
