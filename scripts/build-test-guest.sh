#!/usr/bin/env bash
# Builds the Flotilla test guest (DESIGN.md §6): a Debian cloud kernel plus a busybox initramfs
# whose /init is scripts/test-guest/init.sh, packed into a small raw disk image that boots
#   - under BIOS (SeaBIOS): MBR (syslinux mbr.bin) -> FAT16 partition -> syslinux -> /vmlinuz + /initrd.img
#   - under UEFI (OVMF):    \EFI\BOOT\BOOTX64.EFI, a unified kernel image (systemd-boot's stub + objcopy)
# Built from Debian packages only (apt-get download + dpkg-deb -x), with no mount and no loop device.
#
# Usage: scripts/build-test-guest.sh [OUT_DIR]
#   OUT_DIR defaults to ${FLOTILLA_GUEST_DIR:-/var/cache/flotilla/test-guest}
#   Output: OUT_DIR/test-guest.img (raw, 64 MiB) and OUT_DIR/test-guest.stamp.
#   The stamp holds the hash of this script and of scripts/test-guest/*; when the image exists
#   and the stamp matches, the script exits 0 at once. Otherwise the image is rebuilt in a temp
#   dir inside OUT_DIR and renamed into place (atomic). FLOTILLA_GUEST_REBUILD=1 forces a rebuild.
#   Never boot the image read-write directly: use a qcow2 overlay or a copy.
#
# Build-time Debian packages: apt (apt-get, apt-cache), dpkg, binutils (objcopy, objdump, strings),
#   cpio, gzip, dosfstools (mkfs.vfat), mtools (mmd, mcopy), syslinux, syslinux-common,
#   fdisk (sfdisk), systemd-boot-efi (linuxx64.efi.stub), coreutils, util-linux (flock).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$HERE/test-guest
OUT_DIR=${1:-${FLOTILLA_GUEST_DIR:-/var/cache/flotilla/test-guest}}
IMG=$OUT_DIR/test-guest.img
STAMP=$OUT_DIR/test-guest.stamp
KERNEL_META=${FLOTILLA_GUEST_KERNEL_PKG:-linux-image-cloud-amd64}

# Kernel command line for both boot paths. The last console= becomes /dev/console, which is what
# init writes to: ttyS0 (read by Flotilla). tty0 (VGA) also gets kernel messages, and init copies its
# own lines there, so a VNC client sees text.
CMDLINE="console=tty0 console=ttyS0,115200 quiet panic=-1"
# Written into LBA 1 of the image (unused with an MBR): init never touches a disk that carries it.
BOOT_MARKER="FLOTILLA-TEST-GUEST-BOOT-DISK"
# Modules loaded by init (their dependencies are added, in load order, from the .ko "depends=").
MODULES="virtio_pci virtio_blk virtio_net button evdev efivarfs pvpanic_mmio"
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
IMG_MIB=64         # whole disk
PART_START=2048    # partition start, in 512-byte sectors (1 MiB)

log() { echo "build-test-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

input_hash() {
  # Hash of the script and every file under test-guest/, by relative name, so the stamp does
  # not depend on where the checkout lives.
  (cd "$HERE" && { echo "$CMDLINE|$BOOT_MARKER|$MODULES|$KERNEL_META"; \
     sha256sum build-test-guest.sh; find test-guest -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum; } \
     | sha256sum | cut -d' ' -f1)
}

is_current() {
  [ "${FLOTILLA_GUEST_REBUILD:-0}" != 1 ] && [ -s "$IMG" ] && [ -f "$STAMP" ] \
    && [ "$(head -n1 "$STAMP")" = "$HASH" ]
}

HASH=$(input_hash)
if is_current; then
  echo "$IMG"
  exit 0
fi

# ---- tools --------------------------------------------------------------------------------
missing=()
for t in gcc apt-get apt-cache dpkg-deb objcopy objdump strings cpio gzip mkfs.vfat mmd mcopy syslinux sfdisk flock sha256sum; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
for f in "$STUB" "$MBR_BIN" "$SRC/init.sh"; do [ -f "$f" ] || missing+=("$f"); done
[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (Debian packages: binutils cpio gzip dosfstools mtools syslinux syslinux-common fdisk systemd-boot-efi)"

mkdir -p "$OUT_DIR"
exec 9>"$OUT_DIR/.lock"
flock 9
if is_current; then echo "$IMG"; exit 0; fi   # another build finished while we waited

T0=$(date +%s.%N)
W=$(mktemp -d "$OUT_DIR/.build.XXXXXX")
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"

# ---- Debian packages ----------------------------------------------------------------------
KPKG=$(apt-cache depends "$KERNEL_META" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$KPKG" ] || die "cannot resolve $KERNEL_META to a linux-image package (apt-get update?)"
mkdir -p "$W/deb"
# apt-get download runs as _apt when it can write the directory; as root it warns otherwise.
chown _apt "$W/deb" 2>/dev/null || true
if ! (cd "$W/deb" && apt-get download -q "$KPKG" busybox-static >"$W/apt.log" 2>&1); then
  cat "$W/apt.log" >&2; die "apt-get download $KPKG busybox-static failed"
fi
dpkg-deb -x "$W"/deb/linux-image-*.deb "$W/kernel"
dpkg-deb -x "$W"/deb/busybox-static_*.deb "$W/busybox"
KVER=$(ls "$W/kernel/lib/modules")
[ -f "$W/kernel/boot/vmlinuz-$KVER" ] || die "no vmlinuz in $KPKG"
T1=$(date +%s.%N)

# ---- initramfs ----------------------------------------------------------------------------
R=$W/root
mkdir -p "$R"/{bin,dev,proc,sys,tmp,etc,lib/modules,run}
cp "$W/busybox/bin/busybox" "$R/bin/busybox"
for applet in $("$R/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$R/bin/$applet"    # --list includes busybox itself
done
install -m 755 "$SRC/init.sh" "$R/init"
# the disk workload of flotilla:diskbench, static: the guest has no libc
gcc -static -O2 -Wall -o "$R/bin/diskbench" "$SRC/diskbench.c" || die "compiling diskbench.c failed"
# any other small files under test-guest/ go to /etc/flotilla/
for f in "$SRC"/*; do case "$f" in "$SRC/init.sh"|*.c) ;; *) mkdir -p "$R/etc/flotilla"; cp -r "$f" "$R/etc/flotilla/" ;; esac; done
echo "$BOOT_MARKER" > "$R/etc/boot-marker"
echo "$HASH" > "$R/etc/flotilla-build"

# Module dependencies without kmod: the "depends=" string in each .ko, loaded deps first.
MODDIR=$W/kernel/lib/modules/$KVER
declare -A MODPATH=() SEEN=()
while IFS= read -r p; do n=${p##*/}; n=${n%.ko}; MODPATH[${n//-/_}]=$p; done < <(find "$MODDIR" -name '*.ko')
ORDER=()
add_module() {
  local m=${1//-/_} d
  [ -n "${SEEN[$m]:-}" ] && return
  SEEN[$m]=1
  [ -n "${MODPATH[$m]:-}" ] || die "module $m not found in $KPKG (compressed modules are not supported)"
  for d in $(strings "${MODPATH[$m]}" | sed -n 's/^depends=//p' | tr ',' ' '); do add_module "$d"; done
  ORDER+=("$m")
  cp "${MODPATH[$m]}" "$R/lib/modules/$m.ko"
}
for m in $MODULES; do add_module "$m"; done
printf '%s\n' "${ORDER[@]}" > "$R/lib/modules/load-order"

# /dev/console must be in the archive (init's first output goes there before devtmpfs is mounted).
# Device nodes are written as a hand-made newc archive after cpio's, so no mknod (and no root)
# is needed; the kernel unpacks concatenated archives.
newc_entry() {   # $1 name, $2 mode (octal), $3 rdev major, $4 rdev minor: a header-only newc entry
  local name=$1 pad
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
    0 $((8#$2)) 0 0 1 0 0 0 0 "$3" "$4" $(( ${#name} + 1 )) 0 "$name"
  pad=$(( (4 - (110 + ${#name} + 1) % 4) % 4 ))
  head -c "$pad" /dev/zero
}
{ (cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet)
  newc_entry dev/console 020600 5 1
  newc_entry dev/null 020666 1 3
  newc_entry dev/tty0 020620 4 0
  newc_entry TRAILER!!! 0 0 0
} | gzip -9n > "$W/initrd.img"
cp "$W/kernel/boot/vmlinuz-$KVER" "$W/vmlinuz"
T2=$(date +%s.%N)

# ---- UKI for UEFI -------------------------------------------------------------------------
# systemd 252 has no ukify: add .osrel/.cmdline/.linux/.initrd sections to the stub with objcopy,
# placed after the stub's own sections (image base 0), 1 MiB aligned for the big ones.
printf '%s' "$CMDLINE" > "$W/cmdline.txt"
printf 'NAME="Flotilla test guest"\nID=flotilla-test-guest\nPRETTY_NAME="Flotilla test guest (%s)"\n' "$KVER" > "$W/os-release"
align() { echo $(( ($1 + $2 - 1) / $2 * $2 )); }
stub_end=0
while read -r idx _ size vma _; do
  [[ $idx =~ ^[0-9]+$ ]] || continue
  if (( 16#$vma + 16#$size > stub_end )); then stub_end=$(( 16#$vma + 16#$size )); fi
done < <(objdump -h "$STUB")
osrel_vma=$(align "$stub_end" 65536)
cmdline_vma=$(align $((osrel_vma + $(stat -c %s "$W/os-release"))) 65536)
linux_vma=$(align $((cmdline_vma + $(stat -c %s "$W/cmdline.txt"))) 1048576)
initrd_vma=$(align $((linux_vma + $(stat -c %s "$W/vmlinuz"))) 1048576)
objcopy \
  --add-section .osrel="$W/os-release" --change-section-vma .osrel="$(printf 0x%x "$osrel_vma")" \
  --add-section .cmdline="$W/cmdline.txt" --change-section-vma .cmdline="$(printf 0x%x "$cmdline_vma")" \
  --add-section .linux="$W/vmlinuz" --change-section-vma .linux="$(printf 0x%x "$linux_vma")" \
  --add-section .initrd="$W/initrd.img" --change-section-vma .initrd="$(printf 0x%x "$initrd_vma")" \
  "$STUB" "$W/BOOTX64.EFI"

# ---- FAT partition (built as a plain file, filled with mtools) -----------------------------
PART=$W/part.img
truncate -s $(( IMG_MIB * 1024 * 1024 - PART_START * 512 )) "$PART"
# -h: hidden sectors = partition start (needed by syslinux); fixed volume id for reproducibility
mkfs.vfat -F 16 -h "$PART_START" -n FLOTILLA -i 464c5431 "$PART" >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$PART" ::/EFI ::/EFI/BOOT ::/syslinux
mcopy -i "$PART" "$W/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$PART" "$W/vmlinuz" ::/vmlinuz
mcopy -i "$PART" "$W/initrd.img" ::/initrd.img
cat > "$W/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT flotilla
PROMPT 0
TIMEOUT 0
LABEL flotilla
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $CMDLINE
EOF
mcopy -i "$PART" "$W/syslinux.cfg" ::/syslinux/syslinux.cfg
syslinux --install --directory /syslinux "$PART"   # Debian's syslinux is mtools based: works on a file

# ---- whole disk: MBR + partition + boot marker ---------------------------------------------
DISK=$W/test-guest.img
truncate -s "${IMG_MIB}M" "$DISK"
printf 'label: dos\nlabel-id: 0x464c5431\nstart=%s, type=e, bootable\n' "$PART_START" | sfdisk -q "$DISK"
dd if="$PART" of="$DISK" bs=1M seek=$((PART_START / 2048)) conv=notrunc,sparse status=none
dd if="$MBR_BIN" of="$DISK" bs=440 count=1 conv=notrunc status=none
printf '%-512s' "$BOOT_MARKER" | dd of="$DISK" bs=512 seek=1 count=1 conv=notrunc status=none
T3=$(date +%s.%N)

# ---- publish atomically ---------------------------------------------------------------------
mv -f "$DISK" "$IMG"
{ echo "$HASH"; echo "kernel=$KVER package=$KPKG"; echo "busybox=$(dpkg-deb -f "$W"/deb/busybox-static_*.deb Version)"
  echo "cmdline=$CMDLINE"; echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; } > "$W/stamp"
mv -f "$W/stamp" "$STAMP"
log "built $IMG (kernel $KVER, initrd $(stat -c %s "$W/initrd.img") bytes, UKI $(stat -c %s "$W/BOOTX64.EFI") bytes)"
log "$(awk -v a="$T0" -v b="$T1" -v c="$T2" -v d="$T3" 'BEGIN { printf "download+extract %.2fs, initramfs %.2fs, UKI+disk %.2fs, total %.2fs", b-a, c-b, d-c, d-a }')"
echo "$IMG"
