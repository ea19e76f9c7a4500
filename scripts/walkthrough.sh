#!/usr/bin/env bash
# The README's curl walkthrough, step by step, against a running mesh (`cargo xtask up`).
# CI runs it (.ci/checks/gateway.sh) so the README never rots. Needs curl, jq and python3.
#
#   BASE_URL  the gateway (default http://localhost:8080)
#   MAIL_DIR  where the dev mailer writes .eml files (default var/mail)
#
# Every name gets a suffix, so the walkthrough can run again against the same database.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_URL=${BASE_URL:-http://localhost:8080}
MAIL_DIR=${MAIL_DIR:-var/mail}
S=${WALKTHROUGH_SUFFIX:-$(date +%s)$RANDOM}
ALICE=alice_$S
BOB=bob_$S
BANKER=banker_$S
JSON='content-type: application/json'

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "walkthrough FAILED: $*" >&2; exit 1; }
# curl that prints the answer and fails on a non-2xx status
call() {
  local out status
  out=$(curl -sS -w '\n%{http_code}' "$@")
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  echo "$out" | jq . 2>/dev/null || echo "$out"
  [[ $status == 2* ]] || fail "HTTP $status from: curl $*"
  LAST=$out
}

step "1. Sign up"
call -X POST "$BASE_URL/v1/users" -H "$JSON" \
  -d "{\"username\": \"$ALICE\", \"full_name\": \"Alice Liddell\", \"email\": \"$ALICE@example.com\", \"password\": \"wonderland-42\"}"

step "2. Open the verification link from the email (dev mail folder: $MAIL_DIR)"
LINK=
for _ in $(seq 1 60); do
  FILE=$(grep -l "$ALICE@example.com" "$MAIL_DIR"/*.eml 2>/dev/null | head -1 || true)
  if [[ -n $FILE ]]; then
    # the text part of the email, decoded (quoted-printable or base64), holds the link
    LINK=$(python3 -c '
import email, re, sys
msg = email.message_from_binary_file(open(sys.argv[1], "rb"))
for part in msg.walk():
    if part.get_content_type() == "text/plain":
        m = re.search(r"https?://\S*/v1/verify_email\?\S+", part.get_payload(decode=True).decode())
        if m:
            print(m.group(0))
            break
' "$FILE")
    [[ -n $LINK ]] && break
  fi
  sleep 0.5
done
[[ -n $LINK ]] || fail "no verification email for $ALICE in $MAIL_DIR after 30 s"
LINK="$BASE_URL/v1/${LINK#*/v1/}"   # the same path on the gateway we were given
echo "$LINK"
call "$LINK"
[[ $(jq -r .email_verified <<<"$LAST") == true ]] || fail "email not verified"

step "3. Log in"
call -X POST "$BASE_URL/v1/sessions" -H "$JSON" \
  -d "{\"username\": \"$ALICE\", \"password\": \"wonderland-42\"}"
TOKEN=$(jq -r .access_token <<<"$LAST")
REFRESH=$(jq -r .refresh_token <<<"$LAST")

step "4. Open a USD account"
# (as in the README: curl -d without a content type; the gateway reads the body as JSON anyway)
call -X POST "$BASE_URL/v1/accounts" -H "authorization: Bearer $TOKEN" -d '{"currency":"usd"}'
ACCOUNT=$(jq -r .id <<<"$LAST")

step "5. A banker (created by an operator) deposits 100.00 USD"
AUTH_BIN=${AUTH_BIN:-}
if [[ -z $AUTH_BIN && -x target/debug/auth ]]; then AUTH_BIN=target/debug/auth; fi
create_user() { # username full_name email role password
  if [[ -n $AUTH_BIN ]]; then
    AUTH_NEW_USER_PASSWORD=$5 "$AUTH_BIN" create-user --username "$1" --full-name "$2" --email "$3" --role "$4"
  else
    AUTH_NEW_USER_PASSWORD=$5 cargo run -q -p auth -- create-user --username "$1" --full-name "$2" --email "$3" --role "$4"
  fi
}
export TXN_DATABASE__URL=${TXN_DATABASE__URL:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/transactions}}
echo "\$ auth create-user --username $BANKER --full-name 'Bea Banker' --email $BANKER@example.com --role banker"
create_user "$BANKER" "Bea Banker" "$BANKER@example.com" banker counting-house-1 >/dev/null \
  || fail "auth create-user failed"
call -X POST "$BASE_URL/v1/sessions" -H "$JSON" \
  -d "{\"username\": \"$BANKER\", \"password\": \"counting-house-1\"}"
BANKER_TOKEN=$(jq -r .access_token <<<"$LAST")
call -X POST "$BASE_URL/v1/accounts/$ACCOUNT:deposit" -H "authorization: Bearer $BANKER_TOKEN" \
  -d '{"amount": "10000", "currency": "USD"}'

step "6. Bob opens an account to receive"
create_user "$BOB" "Bob" "$BOB@example.com" depositor bobs-password-1 >/dev/null || fail "create bob"
call -X POST "$BASE_URL/v1/sessions" -H "$JSON" -d "{\"username\": \"$BOB\", \"password\": \"bobs-password-1\"}"
BOB_TOKEN=$(jq -r .access_token <<<"$LAST")
call -X POST "$BASE_URL/v1/accounts" -H "$JSON" -H "authorization: Bearer $BOB_TOKEN" -d '{"currency": "USD"}'
BOB_ACCOUNT=$(jq -r .id <<<"$LAST")

step "7. Transfer 25.00 USD with an Idempotency-Key"
KEY=walkthrough-$S
TRANSFER="{\"from_account_id\": \"$ACCOUNT\", \"to_account_id\": \"$BOB_ACCOUNT\", \"amount\": \"2500\", \"currency\": \"USD\"}"
call -X POST "$BASE_URL/v1/transfers" -H "$JSON" -H "authorization: Bearer $TOKEN" \
  -H "idempotency-key: $KEY" -d "$TRANSFER"
FIRST_ID=$(jq -r .transfer.id <<<"$LAST")

step "8. Repeat it: the same transfer comes back, marked replayed"
call -X POST "$BASE_URL/v1/transfers" -H "$JSON" -H "authorization: Bearer $TOKEN" \
  -H "idempotency-key: $KEY" -d "$TRANSFER"
[[ $(jq -r .transfer.id <<<"$LAST") == "$FIRST_ID" && $(jq -r .replayed <<<"$LAST") == true ]] \
  || fail "the repeat was not a replay of transfer $FIRST_ID"

step "9. List the account's transfers and its statement"
call "$BASE_URL/v1/accounts/$ACCOUNT/transfers?page_size=10" -H "authorization: Bearer $TOKEN"
call "$BASE_URL/v1/accounts/$ACCOUNT/entries" -H "authorization: Bearer $TOKEN"
[[ $(jq -r '.entries[0].balance_after' <<<"$LAST") == 7500 ]] || fail "balance after is not 7500"

step "10. Hold 30.00 USD (a card authorisation), then capture 12.50 of it; the rest is released"
BEFORE_HOLD=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
call -X POST "$BASE_URL/v1/transfers" -H "$JSON" -H "authorization: Bearer $TOKEN" \
  -H "idempotency-key: hold-$S" \
  -d "{\"from_account_id\": \"$ACCOUNT\", \"to_account_id\": \"$BOB_ACCOUNT\", \"amount\": \"3000\", \"currency\": \"USD\", \"pending\": true, \"hold_timeout_secs\": 3600}"
HOLD_ID=$(jq -r .transfer.id <<<"$LAST")
[[ $(jq -r .transfer.status <<<"$LAST") == TRANSFER_STATUS_PENDING ]] || fail "the hold is not pending"
call "$BASE_URL/v1/accounts/$ACCOUNT" -H "authorization: Bearer $TOKEN"
[[ $(jq -r .available_balance <<<"$LAST") == 4500 ]] || fail "available balance is not 7500 - 3000"
call -X POST "$BASE_URL/v1/transfers/$HOLD_ID:post" -H "$JSON" -H "authorization: Bearer $TOKEN" \
  -H "idempotency-key: capture-$S" -d '{"amount": "1250"}'
[[ $(jq -r .transfer.hold_id <<<"$LAST") == "$HOLD_ID" ]] || fail "the post does not name its hold"
call "$BASE_URL/v1/accounts/$ACCOUNT" -H "authorization: Bearer $TOKEN"
[[ $(jq -r .balance <<<"$LAST") == 6250 && $(jq -r .available_balance <<<"$LAST") == 6250 ]] \
  || fail "after the capture the balance is not 6250 with nothing held"
call "$BASE_URL/v1/accounts/$ACCOUNT/balance?as_of=$BEFORE_HOLD" -H "authorization: Bearer $TOKEN"
[[ $(jq -r .balance <<<"$LAST") == 7500 ]] || fail "the balance before the hold is not 7500"

step "11. A payment with a fee leg: 20.00 USD to Bob and 1.00 USD to a fee account, all or nothing"
call -X POST "$BASE_URL/v1/accounts" -H "$JSON" -H "authorization: Bearer $BANKER_TOKEN" -d '{"currency": "USD"}'
FEE_ACCOUNT=$(jq -r .id <<<"$LAST")
call -X POST "$BASE_URL/v1/transactions" -H "$JSON" -H "authorization: Bearer $TOKEN" \
  -H "idempotency-key: order-$S" \
  -d "{\"legs\": [{\"from_account_id\": \"$ACCOUNT\", \"to_account_id\": \"$BOB_ACCOUNT\", \"amount\": \"2000\", \"currency\": \"USD\"}, {\"from_account_id\": \"$ACCOUNT\", \"to_account_id\": \"$FEE_ACCOUNT\", \"amount\": \"100\", \"currency\": \"USD\", \"description\": \"platform fee\"}], \"description\": \"order 17\", \"metadata\": {\"order_id\": \"17-$S\"}}"
TRANSACTION_ID=$(jq -r .transaction_id <<<"$LAST")
SALE_ID=$(jq -r '.legs[0].transfer.id' <<<"$LAST")
[[ $(jq -r '.legs | length' <<<"$LAST") == 2 && $(jq -r '.legs[1].transfer.transaction_id' <<<"$LAST") == "$TRANSACTION_ID" ]] \
  || fail "the payment is not two legs of one transaction"
call "$BASE_URL/v1/accounts/$ACCOUNT/transfers?metadata_key=order_id&metadata_value=17-$S" -H "authorization: Bearer $TOKEN"
[[ $(jq -r '.transfers | length' <<<"$LAST") == 2 ]] || fail "the order id does not find the payment's two legs"

step "12. Bob refunds 5.00 USD of the 20.00: a partial refund, a transfer back that names the sale"
call -X POST "$BASE_URL/v1/transfers/$SALE_ID:reverse" -H "$JSON" -H "authorization: Bearer $BOB_TOKEN" \
  -H "idempotency-key: refund-$S" -d '{"amount": "500", "description": "one item returned"}'
[[ $(jq -r .transfer.reverses_id <<<"$LAST") == "$SALE_ID" ]] || fail "the refund does not name the sale"
call "$BASE_URL/v1/transfers/$SALE_ID" -H "authorization: Bearer $TOKEN"
[[ $(jq -r .reversed_amount <<<"$LAST") == 500 ]] || fail "the sale does not show 5.00 reversed"
call "$BASE_URL/v1/accounts/$ACCOUNT" -H "authorization: Bearer $TOKEN"
[[ $(jq -r .balance <<<"$LAST") == 4650 ]] || fail "the balance is not 6250 - 2100 + 500"

step "13. Renew the tokens"
call -X POST "$BASE_URL/v1/tokens:renew" -H "$JSON" -d "{\"refresh_token\": \"$REFRESH\"}"
TOKEN=$(jq -r .access_token <<<"$LAST")

step "14. Log out"
call -X DELETE "$BASE_URL/v1/sessions/current" -H "authorization: Bearer $TOKEN"

step "An error looks like this (no token)"
out=$(curl -sS -w '\n%{http_code}' "$BASE_URL/v1/accounts")
echo "${out%$'\n'*}" | jq .
[[ ${out##*$'\n'} == 401 ]] || fail "expected 401 without a token"

printf '\nwalkthrough OK\n'
