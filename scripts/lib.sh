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

# ensure_differential_tools: installs, when missing, the two reference implementations the
# constraint differential test compares against (npm's `semver` and PyPI's `packaging`, pinned),
# into a cache directory, and exports where they are:
#   ATTUNE_NPM_SEMVER     the semver package directory (node's require() takes it)
#   ATTUNE_PACKAGING_PATH a directory to put on PYTHONPATH to import packaging
#   ATTUNE_PYTHON         the python interpreter itself (not a pyenv shim, which is slow)
ensure_differential_tools() {
  local npm_semver=7.7.2 packaging=24.2
  local dir="${ATTUNE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/attune}/differential"
  command -v npm >/dev/null || apt_install npm
  if [ ! -f "$dir/npm-$npm_semver/node_modules/semver/package.json" ]; then
    echo "installing npm semver@$npm_semver into $dir..." >&2
    npm install --silent --no-audit --no-fund --prefix "$dir/npm-$npm_semver" "semver@$npm_semver" >&2 \
      || die "npm install semver@$npm_semver failed"
  fi
  ATTUNE_PYTHON="$(python3 -c 'import sys; print(sys.executable)')" || die "python3 does not run"
  if [ ! -d "$dir/packaging-$packaging/packaging" ]; then
    echo "installing PyPI packaging==$packaging into $dir..." >&2
    "$ATTUNE_PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
      --target "$dir/packaging-$packaging" "packaging==$packaging" >&2 \
      || die "pip install packaging==$packaging failed"
  fi
  ATTUNE_NPM_SEMVER="$dir/npm-$npm_semver/node_modules/semver"
  ATTUNE_PACKAGING_PATH="$dir/packaging-$packaging"
  export ATTUNE_NPM_SEMVER ATTUNE_PACKAGING_PATH ATTUNE_PYTHON
}
