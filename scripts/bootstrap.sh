# Sourced by scripts/run and scripts/test: a .venv with the project installed, and apt packages on demand.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${THOONK_BRIDGE_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

quietly() {  # quietly COMMAND...: run it with its output kept in a log, shown only when it fails
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "failed: $*" >&2
    return 1
  fi
  rm -f "$log"
}

apt_install() {  # apt_install PACKAGE...: install Debian packages (as root, or with sudo)
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  if [[ -z "${_APT_UPDATED:-}" ]]; then quietly $sudo apt-get update -qq; _APT_UPDATED=1; fi
  quietly $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

need_command() {  # need_command COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 || { echo "installing $2 (for $1)" >&2; apt_install "$2"; }
}

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating a Python virtual environment in $VENV" >&2
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    echo "installing python3-venv" >&2
    apt_install python3-venv
    "$PY" -m venv "$VENV"
  fi
  quietly "$VENV/bin/python" -m pip install --upgrade pip
fi

# The stamp holds pyproject.toml's hash and the extras installed with it; scripts/run and scripts/test
# ask for different extras, so an install covering both is kept instead of redone on each switch.
_stamp="$VENV/.thoonk-bridge-installed"
_hash=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
if [[ -f "$_stamp" ]]; then read -r _have_hash _have_extras < "$_stamp" || true; fi
_extras=${BOOTSTRAP_EXTRAS:-}
if [[ "${_have_hash:-}" == "$_hash" ]]; then
  _missing=""
  for _e in ${_extras//,/ }; do [[ ",${_have_extras:-}," == *",$_e,"* ]] || _missing=1; done
  [[ -z "$_missing" ]] && _extras=""
  [[ -n "$_extras" && -n "${_have_extras:-}" ]] && _extras="$_have_extras,$_extras"
fi
if [[ "${_have_hash:-}" != "$_hash" || -n "$_extras" ]]; then
  echo "installing thoonk-bridge${_extras:+[$_extras]} and its dependencies into $VENV (once; again only when pyproject.toml changes)" >&2
  quietly "$VENV/bin/python" -m pip install -e "$ROOT${_extras:+[$_extras]}"
  echo "$_hash $_extras" > "$_stamp"
fi
