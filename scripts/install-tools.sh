#!/usr/bin/env bash
# Installs the system tools Satoru needs, only when missing.
#   scripts/install-tools.sh run   tools the services run (ssh, rsync, gzip, restic)
#   scripts/install-tools.sh test  also what the tests run (sshd, sqlite3,
#                                  promtool from Debian's prometheus package,
#                                  headless chromium for the dashboard test,
#                                  ip from iproute2 for network namespaces)
# restic must be 0.16 or newer (--retry-lock); Debian 12 ships 0.14, so a
# newer one is built into ./bin with `go install` when needed.
set -euo pipefail
mode=${1:-run}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
restic_version=0.18.1

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have ssh || need_pkgs+=(openssh-client)
have ssh-keyscan || need_pkgs+=(openssh-client)
have rsync || need_pkgs+=(rsync)
have gzip || need_pkgs+=(gzip)
if [ "$mode" = test ]; then
  [ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
  have sqlite3 || need_pkgs+=(sqlite3)
  have promtool || need_pkgs+=(prometheus)
  have chromium || need_pkgs+=(chromium)
  # ip: the multi-host fault scenarios simulate hosts with network namespaces.
  have ip || need_pkgs+=(iproute2)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-tools: missing packages: ${need_pkgs[*]}; run as root or install them (apt-get install -y ${need_pkgs[*]})" >&2
    exit 1
  fi
  echo "install-tools: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if [ "$mode" = test ] && [ "$(id -u)" -eq 0 ]; then
  mkdir -p /run/sshd && chmod 0755 /run/sshd
fi

# restic_ok PATH: true when PATH is restic 0.16 or newer.
restic_ok() {
  local v
  v=$("$1" version 2>/dev/null | awk '{print $2}') || return 1
  [ -n "$v" ] || return 1
  local major minor
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  [ "$major" -gt 0 ] || [ "$minor" -ge 16 ]
}
if [ -x "$bin/restic" ] && restic_ok "$bin/restic"; then
  :
elif have restic && restic_ok "$(command -v restic)"; then
  :
else
  echo "install-tools: building restic $restic_version into $bin"
  mkdir -p "$bin"
  (cd /tmp && GOBIN="$bin" GOFLAGS=-mod=mod go install "github.com/restic/restic/cmd/restic@v$restic_version")
fi
