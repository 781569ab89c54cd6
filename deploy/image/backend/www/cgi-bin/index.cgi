#!/bin/sh
# One line: pod=<POD_NAME or hostname> node=<NODE_NAME> client=<address> port=<client port>.
# POD_NAME and NODE_NAME come from the pod spec (downward API); httpd passes them through.
# httpd listens on a dual-stack socket: REMOTE_ADDR is "[::ffff:198.51.100.20]" or
# "[2001:db8::20]"; the line carries the plain address (198.51.100.20, 2001:db8::20).
addr="${REMOTE_ADDR#[}"
addr="${addr%]}"
addr="${addr#::ffff:}"
printf 'Content-Type: text/plain\r\n\r\n'
printf 'pod=%s node=%s client=%s port=%s\n' "${POD_NAME:-$(hostname)}" "${NODE_NAME:-unknown}" \
    "$addr" "$REMOTE_PORT"
