#!/usr/bin/env bash
# Installs what the viewer's browser test needs: Debian's chromium and chromedriver.
# Idempotent: does nothing when both are present; refreshes the package lists only when it
# has something to install. Needs root (or sudo) to install.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-test-deps: chromium and chromedriver already installed"
    exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi

# Only what is named: no recommended packages (the browser runs headless with --no-sandbox, so
# chromium-sandbox is not needed). fonts-liberation keeps the saved screenshots readable.
missing+=(fonts-liberation)
echo "install-test-deps: installing with apt-get --no-install-recommends: ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
