#!/bin/sh
# Makes the forge's test TLS fixtures: a private CA and a server certificate
# for 127.0.0.1/localhost, valid 2020-01-01 .. 2120-01-01.  ca.key is deleted.
set -eu
cd "$(dirname "$0")"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cat > "$d/ca.cnf" <<'CNF'
[ca]
default_ca = test_ca
[test_ca]
dir = .
database = DB
new_certs_dir = NEWCERTS
serial = SERIAL
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
sed -i "s|DB|$d/index.txt|; s|NEWCERTS|$d|; s|SERIAL|$d/serial|" "$d/ca.cnf"
: > "$d/index.txt"
openssl rand -hex 16 > "$d/serial"
dates="-startdate 20200101000000Z -enddate 21200101000000Z"
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$d/ca.key" -out "$d/ca.csr" -subj "/CN=hive-ci-prefetch test CA"
openssl ca -batch -notext -config "$d/ca.cnf" -selfsign -keyfile "$d/ca.key" \
    -extensions ca_ext $dates -in "$d/ca.csr" -out ca.crt
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout server.key -out "$d/server.csr" -subj "/CN=localhost"
openssl ca -batch -notext -config "$d/ca.cnf" -cert ca.crt -keyfile "$d/ca.key" \
    -extensions server_ext $dates -in "$d/server.csr" -out server.crt
