#!/usr/bin/env bash
# Install what the HTML report's browser test needs (idempotent): Debian's chromium and the
# Playwright Python client in .venv. Playwright's wheel ships its own driver; we drive the system
# chromium (executable_path=/usr/bin/chromium), so `playwright install` is never run.
# Usage: bash scripts/setup_browser.sh      (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

PY=.venv/bin/python
[ -x "$PY" ] || { echo "setup_browser.sh: .venv missing; run scripts/setup.sh first" >&2; exit 1; }
"$PY" -c "import playwright" 2>/dev/null || "$PY" -m pip install -q "playwright>=1.40"

echo "browser test ready: $(chromium --version 2>/dev/null || echo chromium) + playwright"
