#!/usr/bin/env bash
# Development TLS certificates and SuperNode authentication keys for a Flower
# 1.41 deployment (docker/compose.federation.yml, or processes on loopback).
#
#   bash docker/make-certs.sh [OUT_DIR] [N_SUPERNODES]
#
# OUT_DIR defaults to docker/certs (git-ignored), N_SUPERNODES to 3. The script
# is non-interactive and idempotent: every run replaces what a previous run
# wrote (a new CA each time), and stale supernode-*/ folders are removed.
# EXTRA_SANS (e.g. "DNS:myhost,IP:10.0.0.5") adds SANs to the SuperLink
# certificate. Needs only openssl and ssh-keygen.
#
# OUT_DIR/
#   ca.crt, ca.key             self-signed CA (ECDSA P-384) that signs both leaf certificates
#   server.pem, server.key     SuperLink TLS (--ssl-certfile/--ssl-keyfile; --ssl-ca-certfile ca.crt),
#                              SANs localhost, superlink, 127.0.0.1, ::1 (+ EXTRA_SANS)
#   supernode-K/               K = 1..N
#     auth_key, auth_key.pub   ECDSA P-384 OpenSSH key pair: `flower-supernode
#                              --auth-supernode-private-key auth_key`, and
#                              `flwr supernode register auth_key.pub` on the SuperLink side
#     runtime.pem, runtime.key TLS for the SuperNode's Runtime API (the one its SuperExec
#                              connects to), SANs supernode-K, localhost, 127.0.0.1, ::1
#
# Private keys are written mode 0600: containers that read them must run as the
# owner (see PRUNUS_UID in docker/README.md). These are development
# certificates; use a real PKI for anything else.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here/certs}
n=${2:-3}
days=${CERT_DAYS:-825}

if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
    echo "make-certs.sh: N_SUPERNODES must be a positive integer, got '$n'" >&2
    exit 2
fi
for tool in openssl ssh-keygen; do
    command -v "$tool" >/dev/null || { echo "make-certs.sh: $tool not found" >&2; exit 2; }
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Only what this script writes is removed.
rm -f "$out"/ca.crt "$out"/ca.key "$out"/server.pem "$out"/server.key
rm -rf "$out"/supernode-[0-9]*

cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = prunus development CA
[v3_ca]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

# $1 name (file stem), $2 subject CN, $3 subjectAltName list
leaf() {
    local stem=$1 cn=$2 sans=$3
    cat >"$work/$cn.ext" <<EOF
[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
subjectAltName = $sans
EOF
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$stem.key" -out "$work/$cn.csr" -subj "/CN=$cn" 2>/dev/null
    openssl x509 -req -in "$work/$cn.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 \
        -extfile "$work/$cn.ext" -extensions v3_leaf -out "$stem.pem" 2>/dev/null
    chmod 600 "$stem.key"
    chmod 644 "$stem.pem"
}

# CA
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -nodes \
    -config "$work/openssl.cnf" -extensions v3_ca -days "$days" -sha384 \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
chmod 644 "$out/ca.crt"

# SuperLink: one certificate for its Fleet, Control and Runtime HTTP APIs (one port in 1.41)
sans="DNS:localhost,DNS:superlink,IP:127.0.0.1,IP:::1"
[[ -n ${EXTRA_SANS:-} ]] && sans="$sans,$EXTRA_SANS"
leaf "$out/server" superlink "$sans"

for ((k = 1; k <= n; k++)); do
    dir="$out/supernode-$k"
    mkdir -p "$dir"
    chmod 755 "$dir"
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "prunus-supernode-$k" -f "$dir/auth_key"
    chmod 644 "$dir/auth_key.pub"
    leaf "$dir/runtime" "supernode-$k" "DNS:supernode-$k,DNS:localhost,IP:127.0.0.1,IP:::1"
done

echo "make-certs.sh: CA, SuperLink certificate and $n SuperNode key pairs in $out"
