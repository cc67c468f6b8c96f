#!/usr/bin/env bash
# Install the Debian packages the build needs, only those that are missing.
# Idempotent: a second run installs nothing and prints nothing.
set -euo pipefail

PYTHON="${1:-python3}"
missing=()

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v git >/dev/null 2>&1 || missing+=(git)
# Image codecs the C++ core links against.
have_pkg libjpeg62-turbo-dev || have_pkg libjpeg-turbo8-dev || missing+=(libjpeg-dev)
have_pkg libpng-dev || missing+=(libpng-dev)
# The serving front door (nginx) and what the tests drive it with (curl, openssl for test certificates).
command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || missing+=(nginx)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The search page's browser test: Debian's chromium and its driver (selenium drives them headless).
have_pkg chromium || missing+=(chromium)
have_pkg chromium-driver || missing+=(chromium-driver)
# Python headers and venv: pyenv and python.org builds carry them; Debian's python3 needs the -dev/-venv packages.
if ! "$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  missing+=(python3-dev)
fi
if ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# Packages such as nginx start a system service when installed; mmserve runs its own, so keep them from it.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy"
  trap '$SUDO rm -f "$policy"' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
