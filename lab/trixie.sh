# Sourced by lab/setup, lab/kernel/build and lab/vfio-user-client (after lab/cache.sh):
# download packages from Debian 13 through a private apt configuration, so the system's own
# sources stay Debian 12 only.

# debian_mirror: the Debian archive this machine already uses (first deb822 URIs: or
# sources.list deb line, security excluded).
debian_mirror() {
  local mirror
  mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 | awk '{print $2}' || true)
  [ -n "$mirror" ] || mirror=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 | awk '{print $2}' || true)
  [ -n "$mirror" ] || { echo "cannot find the Debian archive in the apt sources" >&2; return 1; }
  echo "$mirror"
}

# trixie_apt APTDIR SUITE...: a private apt configuration in APTDIR knowing SUITE... of that
# archive (main); sets the array trixie_aptopts to the apt-get options that use it.
trixie_apt() {
  local aptdir=$1 mirror suite
  shift
  mirror=$(debian_mirror) || return 1
  mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
  for suite in "$@"; do
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main"
  done > "$aptdir/sources.list"
  trixie_aptopts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o Dir::Etc::SourceParts=/dev/null
           -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache::Archives=$aptdir/archives"
           -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o APT::Get::List-Cleanup=0
           -o APT::Sandbox::User=root)
}

# trixie_download PKG DIR leaves PKG's .deb (from Debian 13) in DIR and prints its path.
trixie_download() {
  local pkg=$1 dir=$2
  trixie_apt "$cache/apt-trixie" trixie || return 1
  mkdir -p "$dir"
  apt-get "${trixie_aptopts[@]}" update -qq >&2 || { echo "apt-get update for Debian 13 failed" >&2; return 1; }
  (cd "$dir" && rm -f "${pkg}"_*.deb && apt-get "${trixie_aptopts[@]}" download "$pkg" >/dev/null) \
    || { echo "downloading $pkg from Debian 13 failed" >&2; return 1; }
  ls "$dir/${pkg}"_*.deb | head -n1
}
