#!/bin/sh
# Driver for `confab-conformance client`: the `confab` command line client.
# Logs in, sends CONFAB_CONFORMANCE_SEND one `confab send` per line, then
# follows the account with `confab tail` (which keeps the session alive,
# catches up and reconnects by itself) until killed.
#
#   confab-conformance client -- conformance/drivers/confab-cli.sh
#
# CONFAB (default: confab on PATH) names the binary.
set -eu
confab=${CONFAB:-confab}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT INT TERM
addr=${CONFAB_CONFORMANCE_ADDR#ws://}
addr=${addr%/v1/ws}
c() { "$confab" --profile "$profile" --server "$addr" --transport "$CONFAB_CONFORMANCE_TRANSPORT" "$@"; }
printf '%s\n' "$CONFAB_CONFORMANCE_PASSWORD" | c login "$CONFAB_CONFORMANCE_USERNAME" --device conformance --password-stdin
printf '%s\n' "$CONFAB_CONFORMANCE_SEND" | while IFS= read -r line; do
    if [ -n "$line" ]; then c send "$CONFAB_CONFORMANCE_CONVERSATION" "$line"; fi
done
c tail
