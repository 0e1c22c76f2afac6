# Picks the OpenBLAS kernel for the PyTorch peers (sourced by scripts/bench).
#
# Debian's OpenBLAS 0.3.21 does not know some newer CPUs and falls back to its slowest kernels ("Core: Prescott"
# with OPENBLAS_VERBOSE=2), which makes the peers look up to 4x slower than they are. Some machines also set
# OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) in the environment, because old OpenBLAS builds may compute wrong
# results on them. peer_openblas_env prints the environment assignments for the peers: the kernel OpenBLAS picks
# by itself when it is a real one and computes correctly; otherwise the best the CPU runs correctly (SkylakeX with
# AVX-512, then Haswell with AVX2); otherwise the machine's own setting. Each candidate is checked by
# scripts/lib/openblas_check.py against a product computed without BLAS. It sets PEER_ENV (arguments for `env`)
# and PEER_OPENBLAS_CORE (the kernel, for the report).

openblas_core_of() {  # CORETYPE or "" (OpenBLAS's own choice): prints "Core: X ok|wrong"
  local core=$1 out
  out=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ${core:+OPENBLAS_CORETYPE=$core} OPENBLAS_VERBOSE=2 \
    timeout 300 /usr/bin/python3 scripts/lib/openblas_check.py 2>&1) || { echo "failed"; return; }
  printf '%s %s\n' "$(printf '%s\n' "$out" | sed -n 's/^Core: //p' | head -n 1)" \
    "$(printf '%s\n' "$out" | awk '$1 == "ok" || $1 == "wrong" { print $1 }' | tail -n 1)"
}

pick_peer_openblas() {
  local own verdict candidate own_choice
  read -r own verdict <<<"$(openblas_core_of "")"
  own_choice=$own
  case "$own" in
    ""|Prescott|Katmai|Northwood|Banias|Core2|Penryn|Dunnington|Atom) ;;  # generic fallbacks
    *) if [ "$verdict" = ok ]; then
         PEER_ENV=(-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
         PEER_OPENBLAS_CORE="$own (OpenBLAS's own choice)"
         return
       fi ;;
  esac
  for candidate in SkylakeX Haswell; do
    case $candidate in
      SkylakeX) grep -qw avx512f /proc/cpuinfo || continue ;;
      Haswell) grep -qw avx2 /proc/cpuinfo || continue ;;
    esac
    read -r own verdict <<<"$(openblas_core_of "$candidate")"
    if [ "$verdict" = ok ] && [ "$own" = "$candidate" ]; then
      PEER_ENV=(-u OPENBLAS_L2_SIZE "OPENBLAS_CORETYPE=$candidate")
      PEER_OPENBLAS_CORE="$candidate (OPENBLAS_CORETYPE set: OpenBLAS chose ${own_choice:-nothing} by itself)"
      return
    fi
  done
  PEER_ENV=()
  PEER_OPENBLAS_CORE="${OPENBLAS_CORETYPE:-$own_choice} (the machine's setting; no better kernel computed correctly)"
}
