#!/bin/sh
# Driver for `confab-conformance client`: the `confab chat` terminal UI.
# Logs in with the command line client, then runs the UI's own loop, model
# and network side without a terminal (`confab chat --headless`, hidden):
# it opens CONFAB_CONFORMANCE_CONVERSATION with `/go N` and types each line
# of CONFAB_CONFORMANCE_SEND followed by Enter, as keys, once online, and
# otherwise leaves the UI to itself (catch-up, acks, reconnects, resends)
# until killed.
#
#   confab-conformance client -- conformance/drivers/confab-chat.sh
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
c chat --headless </dev/null
