#!/usr/bin/env bash
# Make a throwaway CA, a server certificate for 127.0.0.1 and a client certificate, for the
# TLS tests of the DICOMweb client (Orthanc with SslVerifyPeers).
#   usage: tests/scripts/tls_certs.sh DIR
# Writes DIR/ca.pem, DIR/server.pem (certificate then key, as Orthanc reads it),
# DIR/client.crt, DIR/client.key, and DIR/other-ca.pem (a CA that signed nothing here).
set -euo pipefail
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"
cd "$dir"
q() { "$@" >/dev/null 2>&1 || { echo "tls_certs.sh: $* failed" >&2; "$@"; exit 1; }; }
q openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=cohort test CA" -keyout ca.key -out ca.pem
q openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=another CA" -keyout other-ca.key -out other-ca.pem
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > server.ext
q openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt
cat server.crt server.key > server.pem
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > client.ext
q openssl req -newkey rsa:2048 -nodes -subj "/CN=cohort test client" -keyout client.key -out client.csr
q openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.crt
