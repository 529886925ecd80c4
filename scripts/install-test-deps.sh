#!/usr/bin/env bash
# Installs what the tests need beyond Rust: cargo-deb (the package test, tests/deb_package.rs),
# and Debian's chromium and chromedriver (the viewer's browser test).
# Idempotent: does nothing when all are present; refreshes the package lists only when it
# has something to install. Needs root (or sudo) to install.
set -euo pipefail

# cargo-deb from crates.io, pinned: the package test runs `cargo deb --no-build --profile dev`.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "install-test-deps: installing cargo-deb $CARGO_DEB_VERSION with cargo install"
    cargo install --quiet --locked --no-default-features --version "$CARGO_DEB_VERSION" cargo-deb
fi

missing=()
# The package's postinst runs adduser (in the package test's throwaway root, a copy of this one).
command -v adduser >/dev/null 2>&1 || [ -x /usr/sbin/adduser ] || missing+=(adduser)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-test-deps: adduser, chromium and chromedriver already installed"
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
