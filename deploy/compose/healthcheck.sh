#!/bin/bash
# Container health check of a satoru process: GET /healthz on the port of
# SATORU_API_LISTEN, with bash's /dev/tcp alone (the image has no curl or
# wget). Exits 0 on HTTP 200, 1 otherwise.
set -euo pipefail
port=${SATORU_API_LISTEN##*:}
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
read -r -t 5 _proto code _rest <&3
[ "${code}" = 200 ]
