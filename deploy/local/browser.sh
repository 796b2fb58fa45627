#!/usr/bin/env bash
# browser.sh provides the browser that the browser tests (the TypeScript SDK's and the demo's,
# with Playwright) drive: Debian's chromium, headless, run as root on a machine whose network
# is closed but for loopback.
#
#   browser.sh deps             install Debian's chromium with apt-get if it is missing (idempotent)
#   browser.sh path             print the browser's path
#   browser.sh flags            print the flags every run takes, one a line (Playwright's args)
#   browser.sh version          print the browser's version
#   browser.sh dump-dom URL [FLAG...]
#                               load URL with a fresh profile and print the DOM once it has loaded
#                               (its scripts run); extra FLAGs go to chromium (--virtual-time-budget=MS)
#
# PARLEY_CHROMIUM names another binary (default /usr/bin/chromium). A run gets a fresh
# --user-data-dir under $PARLEY_STATE_DIR/browser, removed afterwards; chromium's own log
# lines go to $PARLEY_STATE_DIR/browser/chromium.log.
set -euo pipefail

BROWSER_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# stack.sh gives as_root and apt_install (apt-get only for what is missing).
# shellcheck source=stack.sh
source "$BROWSER_HERE/stack.sh" --source-only

log() { printf 'browser: %s\n' "$*" >&2; }

: "${PARLEY_CHROMIUM:=/usr/bin/chromium}"

# Headless as root without a sandbox (root cannot have chromium's), no GPU, and nothing that
# reaches out on its own: no QUIC, first-run dialogs, background fetches, component updates
# or sync. The machine's network is closed, and a test must not wait on it.
CHROMIUM_FLAGS=(
  --headless
  --no-sandbox
  --disable-gpu
  --disable-quic
  --no-first-run
  --disable-background-networking
  --disable-component-update
  --disable-sync
)

cmd_deps() {
  if [ -x "$PARLEY_CHROMIUM" ]; then
    log "chromium ready: $("$PARLEY_CHROMIUM" --version 2>/dev/null || echo "$PARLEY_CHROMIUM")"
    return 0
  fi
  [ "$PARLEY_CHROMIUM" = /usr/bin/chromium ] || die "PARLEY_CHROMIUM=$PARLEY_CHROMIUM is not an executable"
  apt_install chromium
  [ -x "$PARLEY_CHROMIUM" ] || die "apt-get installed chromium, but $PARLEY_CHROMIUM is not there"
  log "chromium ready: $("$PARLEY_CHROMIUM" --version)"
}

need_chromium() {
  [ -x "$PARLEY_CHROMIUM" ] || die "$PARLEY_CHROMIUM not found: run 'make browser-deps' (deploy/local/browser.sh deps)"
}

cmd_dump_dom() {
  local url=${1:-}
  [ -n "$url" ] || die "usage: browser.sh dump-dom URL [FLAG...]"
  shift
  need_chromium
  local dir="$PARLEY_STATE_DIR/browser"
  mkdir -p "$dir"
  local profile; profile=$(mktemp -d "$dir/profile.XXXXXX")
  local rc=0
  timeout "${PARLEY_BROWSER_TIMEOUT:-60}" "$PARLEY_CHROMIUM" "${CHROMIUM_FLAGS[@]}" --user-data-dir="$profile" \
    "$@" --dump-dom "$url" 2>>"$dir/chromium.log" || rc=$?
  rm -rf "$profile"
  if [ "$rc" -ne 0 ]; then
    tail -n 20 "$dir/chromium.log" >&2
    die "chromium exited with status $rc loading $url (log: $dir/chromium.log)"
  fi
}

browser_main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    deps) cmd_deps ;;
    path) need_chromium; echo "$PARLEY_CHROMIUM" ;;
    flags) printf '%s\n' "${CHROMIUM_FLAGS[@]}" ;;
    version) need_chromium; "$PARLEY_CHROMIUM" --version ;;
    dump-dom) cmd_dump_dom "$@" ;;
    *) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

if [ "${1:-}" != --source-only ]; then browser_main "$@"; fi
