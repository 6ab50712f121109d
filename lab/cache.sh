# Sourced by lab/setup, lab/run and lab/oracle: where the lab's cache lives. It is per user,
# not per clone, so every clone on a machine boots the same kernel and shares the
# initramfs and package downloads: $LUAVFIO_CACHE, else $XDG_CACHE_HOME/luavfio, else
# ~/.cache/luavfio.
if [ -z "${LUAVFIO_CACHE:-}" ]; then
  home=${HOME:-}
  [ -n "$home" ] || home=$(getent passwd "$(id -u)" | cut -d: -f6)
  cache=${XDG_CACHE_HOME:-$home/.cache}/luavfio
else
  cache=$LUAVFIO_CACHE
fi
