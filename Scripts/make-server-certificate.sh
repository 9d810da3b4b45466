#!/usr/bin/env bash
# Makes a throwaway CA (ca.pem, ca.key) and a server certificate for localhost and 127.0.0.1 signed by it
# (server.pem, server.key) in DIR, with openssl, valid two days, readable by all (a container's unprivileged user
# reads them): for benchmarks and the container test. Never for production.
# Usage: Scripts/make-server-certificate.sh DIR
set -euo pipefail
dir=${1:?directory}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
  -subj "/CN=Warren throwaway CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
  -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext \
  -out server.pem 2>/dev/null
chmod 644 ca.pem server.pem server.key
