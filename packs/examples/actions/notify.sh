#!/bin/sh
# Parameters are in a 0400 dotenv file; sourcing it defines channel, text and api_token. Values
# are single-quoted and names are identifiers the runner has checked (and the schema allows no
# others), so sourcing cannot run anything.
. "$ATTUNE_PARAMETERS_FILE"
# A real action would call the webhook here; we report what we would send, without the token.
printf '{"channel": "%s", "chars": %s, "token_length": %s}\n' "$channel" "${#text}" "${#api_token}"
