#!/usr/bin/env bash
# The compose keygen step (deploy/docker/keygen.sh) with the host's openssl: it writes base64 of a
# 32-byte Ed25519 seed and of the matching public key, keeps an existing pair on a second run, and
# the private key file is readable by its owner only.
set -euo pipefail
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sh "$(dirname "$0")/../docker/keygen.sh" "$dir" >/dev/null
key="$dir/token_ed25519.key"
pub="$dir/token_ed25519.pub"
[ "$(base64 -d "$key" | wc -c)" -eq 32 ] || { echo "private key is not 32 bytes"; exit 1; }
[ "$(base64 -d "$pub" | wc -c)" -eq 32 ] || { echo "public key is not 32 bytes"; exit 1; }
# PKCS#8 prefix of an Ed25519 private key + the seed → derive the public key with openssl.
derived="$( (printf '\060\056\002\001\000\060\005\006\003\053\145\160\004\042\004\040'; base64 -d "$key") \
  | openssl pkey -inform DER -pubout -outform DER | tail -c 32 | base64)"
[ "$derived" = "$(cat "$pub")" ] || { echo "public key does not match the private key"; exit 1; }
[ "$(stat -c %a "$key")" = 400 ] || { echo "private key mode is $(stat -c %a "$key"), want 400"; exit 1; }
before="$(cat "$key")"
sh "$(dirname "$0")/../docker/keygen.sh" "$dir" >/dev/null
[ "$before" = "$(cat "$key")" ] || { echo "a second run replaced the key pair"; exit 1; }
echo "keygen: 1 passed, 0 failed"
