# Sourced by scripts/run and scripts/test: a .venv with the project installed, and apt packages on demand.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${THOONK_BRIDGE_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

apt_install() {  # apt_install PACKAGE...: install Debian packages (as root, or with sudo)
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  if [[ -z "${_APT_UPDATED:-}" ]]; then $sudo apt-get update -qq >&2; _APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2
}

need_command() {  # need_command COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 || { echo "installing $2 (for $1)" >&2; apt_install "$2"; }
}

if [[ ! -x "$VENV/bin/python" ]]; then
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
fi

# The stamp holds pyproject.toml's hash and the extras installed with it; scripts/run and scripts/test
# ask for different extras, so an install covering both is kept instead of redone on each switch.
_stamp="$VENV/.thoonk-bridge-installed"
_hash=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
read -r _have_hash _have_extras < "$_stamp" 2>/dev/null || true
_extras=${BOOTSTRAP_EXTRAS:-}
if [[ "${_have_hash:-}" == "$_hash" ]]; then
  _missing=""
  for _e in ${_extras//,/ }; do [[ ",${_have_extras:-}," == *",$_e,"* ]] || _missing=1; done
  [[ -z "$_missing" ]] && _extras=""
  [[ -n "$_extras" && -n "${_have_extras:-}" ]] && _extras="$_have_extras,$_extras"
fi
if [[ "${_have_hash:-}" != "$_hash" || -n "$_extras" ]]; then
  echo "installing thoonk-bridge${_extras:+[$_extras]} into $VENV" >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT${_extras:+[$_extras]}" >&2
  echo "$_hash $_extras" > "$_stamp"
fi
