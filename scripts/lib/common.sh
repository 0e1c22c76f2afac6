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

# ensure_node_llama_cpp: installs llama.cpp for the GGUF checks and the demo's samples (npm's node-llama-cpp, its
# prebuilt CPU binaries, pinned by tests/llama_cpp/package-lock.json) into tests/llama_cpp/node_modules. Without
# node/npm or the registry it says so loudly and returns 0: the tests that need it exit 77 (ctest: skipped) and the
# demo skips its samples.
ensure_node_llama_cpp() {
  local dir=tests/llama_cpp
  if [ -f $dir/node_modules/node-llama-cpp/package.json ] &&
     [ -f $dir/node_modules/@node-llama-cpp/linux-x64/package.json ] &&
     [ $dir/node_modules/.package-lock.json -nt $dir/package-lock.json ]; then
    echo "node-llama-cpp is installed already"
  elif command -v npm > /dev/null && command -v node > /dev/null; then
    # npm ci refuses a lockfile that lacks optional packages the registry does not serve (node-llama-cpp lists
    # prebuilt binaries for every platform; a mirror may hold only some): then the same lockfile is installed by
    # npm install --no-save, which takes its pinned versions and leaves it unchanged.
    (cd $dir && { npm ci --omit=optional --ignore-scripts --no-audit --no-fund > npm-ci.log 2>&1 ||
       { echo "npm ci refused the lockfile ($(grep -m1 -o 'can only install.*in sync' npm-ci.log || echo "see $dir/npm-ci.log"));" \
              "installing its pinned versions with npm install --no-save"
         npm install --omit=optional --ignore-scripts --no-audit --no-fund --no-save; }; }) ||
      echo "*** npm could not install node-llama-cpp (is the npm registry reachable?): the llama.cpp checks will be SKIPPED" >&2
  else
    echo "*** node and npm are not installed (sudo apt-get install -y nodejs npm): the llama.cpp checks will be SKIPPED" >&2
  fi
}
