# Shared by scripts/*: install missing Debian packages, and configure/build helpers.

# ensure_packages PKG...: installs the missing ones when run as root; otherwise prints the exact
# apt-get line and exits non-zero.
ensure_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "Installing missing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    echo "Missing Debian packages. Install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

# The packages every build of lorakit needs.
LORAKIT_BUILD_PACKAGES=(build-essential cmake libeigen3-dev libxsimd-dev catch2 libbenchmark-dev nlohmann-json3-dev zlib1g-dev
  pkgconf libopenmpi-dev openmpi-bin)

lorakit_jobs() { echo "${LORAKIT_JOBS:-$(nproc)}"; }
