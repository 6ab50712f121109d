# Sourced by lab/setup, lab/run, lab/initramfs and lab/oracle: where the lab's cache
# lives. It is per user, not per clone, so every clone on a machine boots the same kernel
# and shares the initramfs and package downloads: $LUAVFIO_CACHE, else
# $XDG_CACHE_HOME/luavfio, else ~/.cache/luavfio.
if [ -z "${LUAVFIO_CACHE:-}" ]; then
  home=${HOME:-}
  [ -n "$home" ] || home=$(getent passwd "$(id -u)" | cut -d: -f6)
  cache=${XDG_CACHE_HOME:-$home/.cache}/luavfio
else
  cache=$LUAVFIO_CACHE
fi

# lab_cache_file NAME TEST: where the file NAME of the cache's lab/ is read or made:
# there, when `test TEST` holds for it or the cache can be written; else, since inside
# the lab the cache is read-only, ${TMPDIR:-/tmp}/NAME.
lab_cache_file() {
  local f=$cache/lab/$1
  test "$2" "$f" || [ -w "$cache/lab" ] || f=${TMPDIR:-/tmp}/$1
  echo "$f"
}
