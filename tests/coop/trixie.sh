# Sourced by tests/coop/run.sh and bench/amd_isa.sh: a minimal Debian trixie with Mesa 26.1
# from trixie-backports, kept in $root (~/.cache/hearth-trixie unless HEARTH_TRIXIE says
# otherwise; debootstrap: about two minutes the first time), and in it the packages named
# (besides Mesa's Vulkan drivers and the loader) where they are missing. As root.
#
#   trixie_ready PACKAGE...      then run in it with trixie_run COMMAND (sh -c's text) ARG...
root=${HEARTH_TRIXIE:-$HOME/.cache/hearth-trixie}

trixie_ready() {
  if [ ! -e "$root/.ready" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
    rm -rf "$root"
    debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian >/dev/null
    echo 'deb http://deb.debian.org/debian trixie-backports main' >"$root/etc/apt/sources.list.d/backports.list"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t trixie-backports mesa-vulkan-drivers libvulkan1' >/dev/null
    touch "$root/.ready"
  fi
  local missing=()
  for p in "$@"; do chroot "$root" dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t trixie-backports "$@"' sh "${missing[@]}" >/dev/null
  fi
  mkdir -p "$root/opt/hearth" "$root$PWD"
}

# COMMAND inside the chroot, in a mount namespace of its own with /proc, /dev and the clone
# ($PWD) bound at their paths, from the clone's folder; ARGs are its $1, $2, ...
trixie_run() {
  unshare --mount --propagation private sh -c '
    set -e
    root=$1; shift
    for dir in /proc /dev "$PWD"; do mount --bind "$dir" "$root$dir"; done
    chroot "$root" sh -c "cd \"$PWD\" && $0" sh "$@"
  ' "$1" "$root" "${@:2}"
}
