# Shared by scripts/test, scripts/demo and scripts/bench: install what is missing, loudly.
# Sourced, not run.

die() { echo "error: $*" >&2; exit 1; }

# apt_install PKG...: installs Debian packages when we may (root with apt-get), else explains.
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $* with apt-get..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 \
      || die "apt-get install $* failed"
  else
    die "missing: $* (install it with your package manager, e.g. sudo apt-get install $*)"
  fi
}

ensure_tools() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust from your distribution or rustup"
  command -v python3 >/dev/null || apt_install python3 python3-pip python3-venv
  command -v node >/dev/null || apt_install nodejs
  command -v sh >/dev/null || die "no /bin/sh"
  NATS_SERVER_BIN="$(scripts/install-nats-server)" || die "could not install nats-server"
  export NATS_SERVER_BIN
  echo "nats-server: $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version))" >&2
}
