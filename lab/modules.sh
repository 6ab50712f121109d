# Sourced by lab/run and lab/initramfs (after lab/cache.sh, with $kdir and $kver set): the
# lab kernel's modules by name, and their dependencies from each module's depends= string
# (no depmod data ships in the package folder we unpack).
moddir=$kdir/lib/modules/$kver/kernel
modindex=$(lab_cache_file "modindex-$kver" -f)

# lab_modindex: "name path" for every module of the lab kernel, cached per kernel (empty
# for a kernel with every driver built in).
lab_modindex() {
  [ -f "$modindex" ] && return 0
  find "$moddir" -name '*.ko' | while read -r f; do b=${f##*/}; b=${b%.ko}; echo "${b//-/_} $f"; done \
    > "$modindex.tmp" && mv "$modindex.tmp" "$modindex"
}

# lab_resolve NAME DEST: copy NAME's dependencies, then NAME, into DEST as NAME.ko and
# print each name once, in load order (depth first). A name the kernel has built in is
# reported and skipped. The caller declares `declare -A done_mods=()` first.
lab_resolve() {
  local m=${1//-/_} dest=$2 f deps d
  [ -n "${done_mods[$m]:-}" ] && return 0
  f=$(awk -v m="$m" '$1 == m {print $2; exit}' "$modindex")
  # Built in (the 6.12 lab kernel has everything built in): nothing to load.
  if [ -z "$f" ] && sed 's|.*/||; s|\.ko$||; s|-|_|g' "$kdir/lib/modules/$kver/modules.builtin" 2>/dev/null | grep -qx "$m"; then
    done_mods[$m]=1; return 0
  fi
  if [ -z "$f" ]; then printf 'lab: module %s not in %s (built in?)\n' "$m" "$kver" >&2; done_mods[$m]=1; return 0; fi
  deps=$(grep -a -o -m1 'depends=[a-z0-9_,-]*' "$f" | head -n1 | cut -d= -f2)
  for d in ${deps//,/ }; do lab_resolve "$d" "$dest" || return 1; done
  done_mods[$m]=1
  cp "$f" "$dest/$m.ko"
  echo "$m"
}
