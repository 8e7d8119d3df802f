#!/usr/bin/env bash
# Installs what the tests need beyond Rust: tmux, in which the end-to-end
# test of `nodetrace top` runs the live view as on a real terminal. Debian
# and Ubuntu (apt-get); as root or through sudo. Does nothing if present.
set -euo pipefail
if command -v tmux >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-tools: tmux is missing and there is no apt-get here: install tmux with this system's package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "install-test-tools: installing tmux" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq tmux >/dev/null
command -v tmux >/dev/null
