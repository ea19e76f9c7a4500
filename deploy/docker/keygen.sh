#!/bin/sh
# Writes an Ed25519 access-token key pair into DIR (default /keys) unless one is already there:
#   DIR/token_ed25519.key  base64 of the 32-byte private seed (auth: AUTH_TOKEN__PRIVATE_KEY_FILE)
#   DIR/token_ed25519.pub  base64 of the 32-byte public key   (all: TXN_TOKEN__PUBLIC_KEY_FILE)
# The same format as `cargo xtask up` writes under var/keys. Development only.
set -eu
dir="${1:-/keys}"
key="$dir/token_ed25519.key"
pub="$dir/token_ed25519.pub"
if [ -s "$key" ] && [ -s "$pub" ]; then
  echo "keygen: keeping the existing key pair in $dir"
  exit 0
fi
umask 077
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl genpkey -algorithm ed25519 -out "$tmp/key.pem"
# PKCS#8 DER of an Ed25519 key ends with the 32-byte seed; SPKI DER ends with the public key.
openssl pkey -in "$tmp/key.pem" -outform DER | tail -c 32 | base64 > "$tmp/key"
openssl pkey -in "$tmp/key.pem" -pubout -outform DER | tail -c 32 | base64 > "$tmp/pub"
chmod 0400 "$tmp/key"
chmod 0444 "$tmp/pub"
mv "$tmp/key" "$key"
mv "$tmp/pub" "$pub"
echo "keygen: wrote a new key pair to $dir"
