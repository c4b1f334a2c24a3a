#!/usr/bin/env bash
# Debian's Chromium for the browser tests (Playwright drives it by its executable path; no browser
# download of Playwright's own).
set -euo pipefail
case "${1:-install}" in
  install)
    # Chromium, and a CJK font so pages and screenshots show Chinese text, not empty boxes.
    if [[ -x /usr/bin/chromium && -d /usr/share/fonts/truetype/wqy ]]; then exit 0; fi
    echo "browser: installing Debian's chromium and fonts-wqy-microhei (first run only)"
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
    ;;
  path) echo /usr/bin/chromium ;;
  *) echo "usage: browser.sh install|path" >&2; exit 2 ;;
esac
