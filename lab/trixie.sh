# Sourced by lab/setup and lab/kernel/build (after lab/cache.sh): download one package from
# Debian 13 through a private apt configuration, so the system's own sources stay Debian
# 12 only. trixie_download PKG DIR leaves PKG's .deb in DIR and prints its path.
trixie_download() {
  local pkg=$1 dir=$2 mirror aptdir
  # The Debian archive this machine already uses (first deb822 URIs: or sources.list deb line).
  mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 | awk '{print $2}' || true)
  [ -n "$mirror" ] || mirror=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 | awk '{print $2}' || true)
  [ -n "$mirror" ] || { echo "cannot find the Debian archive in the apt sources" >&2; return 1; }
  aptdir=$cache/apt-trixie
  mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial" "$dir"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
    > "$aptdir/sources.list"
  local aptopts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o Dir::Etc::SourceParts=/dev/null
           -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache::Archives=$aptdir/archives"
           -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o APT::Get::List-Cleanup=0
           -o APT::Sandbox::User=root)
  apt-get "${aptopts[@]}" update -qq >&2 || { echo "apt-get update for Debian 13 failed" >&2; return 1; }
  (cd "$dir" && rm -f "${pkg}"_*.deb && apt-get "${aptopts[@]}" download "$pkg" >/dev/null) \
    || { echo "downloading $pkg from Debian 13 failed" >&2; return 1; }
  ls "$dir/${pkg}"_*.deb | head -n1
}
