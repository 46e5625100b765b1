#!/bin/sh
# /init of the Flotilla test guest (busybox sh as PID 1), built by scripts/build-test-guest.sh.
#
# Per-VM switches: SMBIOS type 11 OEM strings, e.g.
#     qemu ... -smbios type=11,value=flotilla:poweroff-after=5 -smbios type=11,value=flotilla:diskwrite=1
# The Debian cloud kernel has CONFIG_DMI_SYSFS=y (built in), so every OEM-strings structure is
# readable at /sys/firmware/dmi/entries/11-*/raw without a module; strings that start with
# "flotilla:" are switches. (fw_cfg would need the qemu_fw_cfg module and is not used.)
#   flotilla:poweroff-after=N   sync + poweroff -f N seconds after init starts
#   flotilla:reboot-after=N     sync + reboot -f N seconds after init starts
#   flotilla:crash-after=N      kernel panic (sysrq c) after N seconds; panic=-1 reboots at once
#   flotilla:diskwrite=1        each tick, 1 MiB of random data at offset (1 + tick % 64) MiB of the data disk
#   flotilla:diskbench=N        before the ticks, N MiB written and read back on the data disk, then
#                               4 KiB random reads (diskbench.c; its figures overwrite the disk)
#   flotilla:efivar-write=V     (UEFI) set the non-volatile variable FlotillaTest-<EFI_GUID below> to V
#
# Serial console lines (stable prefixes, parsed by tests):
#   FLOTILLA-GUEST boot uuid=<smbios uuid> firmware=<bios|uefi> kernel=<uname -r>
#   FLOTILLA switches: <space-separated switches, or none>
#   FLOTILLA efi SecureBoot=<0|1|?>                          (UEFI only)
#   FLOTILLA efivar FlotillaTest=<value or none>             (UEFI only; value before any write)
#   FLOTILLA efivar-write FlotillaTest=<value> <ok|failed>   (UEFI only, with the switch)
#   FLOTILLA data disk=</dev/vdX|/dev/nvmeXnY|none>[ previous: <record or none>]
#   FLOTILLA diskbench seq-write=<MiB/s> seq-read=<MiB/s> rand-read-4k=<IOPS>   (with the switch)
#   FLOTILLA diskbench failed                                (with the switch, when it could not run)
#   FLOTILLA tick=<n> up=<uptime seconds>                    (every second)
#   FLOTILLA disks: <block disks, e.g. vda vdb>              (at the first tick and whenever they change: hot-plug)
#   FLOTILLA net <ethN> mac=<mac> neighbours=<link-local addresses, or none>   (every 10 s per NIC)
#   FLOTILLA net none                                        (once, when there is no NIC)
#   FLOTILLA power button / FLOTILLA poweroff-after=N / reboot-after=N / crash-after=N
# Data disk record (sector 0 of the first virtio/NVMe disk that is not the boot disk, 512 bytes,
# space padded, newline at byte 512):  FLOTILLA-DATA boots=<b> tick=<n> up=<u>
# The boot disk carries the marker /etc/boot-marker at LBA 1 and is never written.

export PATH=/bin
# FlotillaTest lives under LINUX_EFI_CRASH_GUID: efivarfs marks every variable whose GUID/name is
# not in its known list immutable (it can be created once, but never rewritten or deleted without
# chattr, which busybox lacks); "<crash GUID>-*" is in that list, so the variable stays writable.
EFI_GUID=cfc8fc79-be2e-4ddc-97f0-9f98bfe298a0
EFI_GLOBAL=8be4df61-93ca-11d2-aa0d-00e098032b8c

mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

# Lines go to /dev/console (ttyS0, read by Flotilla) and to the VGA text console for VNC users.
say() {
  echo "$*"
  echo "$*" > /dev/tty0 2>/dev/null
}

firmware=bios
[ -d /sys/firmware/efi ] && firmware=uefi
uuid=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)
say "FLOTILLA-GUEST boot uuid=${uuid:-unknown} firmware=$firmware kernel=$(uname -r)"

# ---- switches (SMBIOS type 11) -------------------------------------------------------------
: > /run/switches
for raw in /sys/firmware/dmi/entries/11-*/raw; do
  [ -r "$raw" ] || continue
  hlen=$(od -An -tu1 -j1 -N1 "$raw" | tr -d ' ')    # formatted-area length; strings follow it
  tail -c +$((hlen + 1)) "$raw" | tr '\000' '\n' | grep '^flotilla:' >> /run/switches
done
SWITCHES=""
while read -r sw; do
  SWITCHES="$SWITCHES $sw"
  v=${sw#*=}
  case "$sw" in
    flotilla:poweroff-after=*) POWEROFF_AFTER=$v ;;
    flotilla:reboot-after=*) REBOOT_AFTER=$v ;;
    flotilla:crash-after=*) CRASH_AFTER=$v ;;
    flotilla:diskwrite=*) DISKWRITE=$v ;;
    flotilla:diskbench=*) DISKBENCH=$v ;;
    flotilla:efivar-write=*) EFIVAR_WRITE=$v ;;
  esac
done < /run/switches
SWITCHES=${SWITCHES# }
say "FLOTILLA switches: ${SWITCHES:-none}"

# ---- modules (order computed at build time from the .ko depends= strings) -------------------
while read -r m; do
  insmod "/lib/modules/$m.ko" 2>/dev/null
done < /lib/modules/load-order

# ---- timers ---------------------------------------------------------------------------------
isnum() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; }
if isnum "$POWEROFF_AFTER"; then
  ( sleep "$POWEROFF_AFTER"; say "FLOTILLA poweroff-after=$POWEROFF_AFTER"; sync; poweroff -f ) &
fi
if isnum "$REBOOT_AFTER"; then
  ( sleep "$REBOOT_AFTER"; say "FLOTILLA reboot-after=$REBOOT_AFTER"; sync; reboot -f ) &
fi
if isnum "$CRASH_AFTER"; then
  ( sleep "$CRASH_AFTER"; say "FLOTILLA crash-after=$CRASH_AFTER"; echo 1 > /proc/sys/kernel/sysrq
    echo c > /proc/sysrq-trigger ) &
fi

# ---- ACPI power button (button + evdev modules, busybox acpid: KEY_POWER -> PWRF/00000080) ---
mkdir -p /etc/acpi/PWRF
cat > /etc/acpi/PWRF/00000080 <<'EOF'
#!/bin/sh
echo "FLOTILLA power button" > /dev/console
echo "FLOTILLA power button" > /dev/tty0 2>/dev/null
sync
poweroff -f
EOF
chmod 755 /etc/acpi/PWRF/00000080
acpid -c /etc/acpi -l /dev/null 2>/dev/null

# ---- UEFI variables -------------------------------------------------------------------------
if [ "$firmware" = uefi ]; then
  EV=/sys/firmware/efi/efivars
  mount -t efivarfs efivarfs "$EV" 2>/dev/null
  sb=$(tail -c 1 "$EV/SecureBoot-$EFI_GLOBAL" 2>/dev/null | od -An -tu1 | tr -d ' ')
  case "$sb" in 0|1) ;; *) sb='?' ;; esac
  say "FLOTILLA efi SecureBoot=$sb"
  var=$EV/FlotillaTest-$EFI_GUID
  cur=""
  [ -f "$var" ] && cur=$(tail -c +5 "$var" 2>/dev/null)    # skip the 4-byte attributes
  say "FLOTILLA efivar FlotillaTest=${cur:-none}"
  if [ -n "${EFIVAR_WRITE+x}" ] && [ "$cur" = "$EFIVAR_WRITE" ]; then
    say "FLOTILLA efivar-write FlotillaTest=$EFIVAR_WRITE ok"     # already set: spare the flash
  elif [ -n "${EFIVAR_WRITE+x}" ]; then
    # attributes NON_VOLATILE|BOOTSERVICE_ACCESS|RUNTIME_ACCESS (0x7), then the value, in one write()
    printf '\007\000\000\000%s' "$EFIVAR_WRITE" > /tmp/efivar
    if { cat /tmp/efivar > "$var"; } 2>/dev/null && [ "$(tail -c +5 "$var" 2>/dev/null)" = "$EFIVAR_WRITE" ]; then
      say "FLOTILLA efivar-write FlotillaTest=$EFIVAR_WRITE ok"
    else
      say "FLOTILLA efivar-write FlotillaTest=$EFIVAR_WRITE failed"
    fi
  fi
fi

# ---- data disk --------------------------------------------------------------------------------
MARKER=$(cat /etc/boot-marker)
is_boot_disk() {
  [ "$(dd if="/dev/$1" bs=512 skip=1 count=1 2>/dev/null | head -c ${#MARKER} | tr -d '\000')" = "$MARKER" ]
}
disks() {
  for d in /sys/block/vd* /sys/block/nvme*n*; do [ -e "$d" ] && echo "${d##*/}"; done
}
# virtio_blk probes synchronously in insmod; NVMe (built in) probes asynchronously: wait (up to
# 2 s) until there are at least as many NVMe block devices as NVMe PCI functions (class 010802).
nvme_ctrls=$(cat /sys/bus/pci/devices/*/class 2>/dev/null | grep -c '^0x010802')
i=0
while [ $i -lt 20 ]; do
  nvme_disks=0
  for d in /sys/block/nvme*n*; do [ -e "$d" ] && nvme_disks=$((nvme_disks + 1)); done
  [ "$nvme_disks" -ge "$nvme_ctrls" ] && break
  sleep 0.1; i=$((i + 1))
done
DATA=""
for d in $(disks); do
  is_boot_disk "$d" && continue
  DATA=$d; break
done

write_record() {   # $1 tick, $2 uptime
  printf '%-511s\n' "FLOTILLA-DATA boots=$BOOTS tick=$1 up=$2" > /run/record
  dd if=/run/record of="/dev/$DATA" bs=512 count=1 conv=notrunc,fsync 2>/dev/null
}
uptime_s() { read -r u _ < /proc/uptime; echo "$u"; }

if [ -n "$DATA" ]; then
  prev=$(dd if="/dev/$DATA" bs=512 count=1 2>/dev/null | tr -d '\000' | head -n 1 | sed 's/ *$//')
  case "$prev" in FLOTILLA-DATA\ *) ;; *) prev="" ;; esac
  b=$(echo "$prev" | sed -n 's/.* boots=\([0-9]*\).*/\1/p')
  BOOTS=$(( ${b:-0} + 1 ))
  say "FLOTILLA data disk=/dev/$DATA previous: ${prev:-none}"
  write_record 0 "$(uptime_s)"
else
  say "FLOTILLA data disk=none"
fi

if [ -n "$DISKBENCH" ]; then
  figures=""
  isnum "$DISKBENCH" && [ -n "$DATA" ] && figures=$(diskbench "/dev/$DATA" "$DISKBENCH" 4000)
  say "FLOTILLA diskbench ${figures:-failed}"
fi

# ---- network: virtio_net, IPv6 link-local, ping ff02::1 every 10 s in the background ----------
net_check() {   # $1 = interface
  i=$1
  mac=$(cat "/sys/class/net/$i/address")
  k=0   # wait for a link-local address that finished duplicate address detection
  while [ $k -lt 40 ]; do
    a=$(ip -6 addr show dev "$i" scope link 2>/dev/null)
    case "$a" in *inet6*) case "$a" in *tentative*) ;; *) break ;; esac ;; esac
    sleep 0.25; k=$((k + 1))
  done
  own=$(ip -6 addr show dev "$i" scope link 2>/dev/null | sed -n 's/.*inet6 \([^/ ]*\).*/\1/p')
  nb=$(ping -6 -c 3 -i 0.5 -w 3 -I "$i" ff02::1 2>/dev/null \
       | sed -n 's/^[0-9]* bytes from \([^ ]*\): seq=.*/\1/p' | sort -u \
       | grep -vxF "${own:-::}" | tr '\n' ' ')
  nb=${nb% }
  say "FLOTILLA net $i mac=$mac neighbours=${nb:-none}"
}
net_loop() {
  ip link set lo up 2>/dev/null
  said_none=""
  while :; do
    n=0
    for p in /sys/class/net/eth*; do
      [ -e "$p" ] || continue
      n=$((n + 1))
      ip link set "${p##*/}" up 2>/dev/null
    done
    if [ $n -eq 0 ]; then
      [ -z "$said_none" ] && say "FLOTILLA net none"
      said_none=1
    else
      for p in /sys/class/net/eth*; do net_check "${p##*/}"; done
    fi
    sleep 10
  done
}
net_loop &

# ---- ticks --------------------------------------------------------------------------------------
n=0
seen=
while :; do
  n=$((n + 1))
  up=$(uptime_s)
  say "FLOTILLA tick=$n up=$up"
  now=$(disks | tr '\n' ' ')
  if [ "$now" != "$seen" ]; then
    seen=$now
    say "FLOTILLA disks: ${now% }"
  fi
  if [ -n "$DATA" ]; then
    write_record "$n" "$up"
    if [ "$DISKWRITE" = 1 ]; then
      dd if=/dev/urandom of="/dev/$DATA" bs=1M count=1 seek=$((1 + n % 64)) conv=notrunc,fsync 2>/dev/null
    fi
  fi
  sleep 1
done
