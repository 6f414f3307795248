#!/usr/bin/env bash
# The project's test command, on a fresh machine or an old one: installs what the tests need,
# then checks formatting and lints and runs every test (unit, property, conformance, CLI, docs).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  # Debian's packages, only when a command is missing; `apt-get update` first on a fresh machine.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "warning: cannot install $* (not root or no apt-get)" >&2
  fi
}

# python3 runs the plan's own Python client and drives a pseudo-terminal in the tests.
command -v python3 >/dev/null || apt_install python3
for component in rustfmt clippy; do
  cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$component"
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --quiet
