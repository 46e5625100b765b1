// The programs the tests and benchmarks run beside the daemon's own (src/lib/programs.ts), with
// the Debian package each comes from; test/unit/programs.test.ts checks that every program
// they name is listed here or there, and that scripts/setup.sh installs its package.
export const TEST_PROGRAMS: Record<string, string> = {
  'qemu-io': 'qemu-utils',
  '/usr/bin/python3': 'python3',
  '/usr/bin/chromium': 'chromium',
  'ansible-playbook': 'ansible',
  curl: 'curl',
  git: 'git',
  dd: 'coreutils',
  sync: 'coreutils',
  truncate: 'coreutils',
  find: 'findutils',
  fincore: 'util-linux',
  losetup: 'mount',
  ps: 'procps',
  // a lab's hosts (test/helpers/lab.ts), run inside their namespaces through `ip netns exec`
  iptables: 'iptables',
  unshare: 'util-linux',
  sh: 'dash',
  hostname: 'hostname',
  // the pool database's members as etcd lists them (test/integration/pool.test.ts)
  etcdctl: 'etcd-client',
  // a lab's NFS server (test/helpers/nfs-server.ts); its VFS backend is nfs-ganesha-vfs
  'ganesha.nfsd': 'nfs-ganesha',
  rpcbind: 'rpcbind',
  mount: 'mount',
  sleep: 'coreutils',
  // a lab's Ceph cluster (test/helpers/ceph-server.ts)
  'ceph-mon': 'ceph-mon',
  'ceph-osd': 'ceph-osd',
  'ceph-mgr': 'ceph-mgr',
  'ceph-authtool': 'ceph-common',
  monmaptool: 'ceph-base',
  // a ZFS pool in a file for the ZFS SR test
  'zfs-fuse': 'zfs-fuse',
  zpool: 'zfs-fuse',
  zfs: 'zfs-fuse',
}
