#!/usr/bin/env bash
# A lab of Flotilla hosts on this machine, for demos: N hosts as network namespaces on one switch
# (10.213.0.0/24), each running its own daemon on ports 80/443, reachable from here.
#   scripts/lab-pool.sh up 3        build 3 hosts, print their URLs and root password
#   scripts/lab-pool.sh status      each host's state
#   scripts/lab-pool.sh cut 2 [link] / heal 2 / kill 2 / restart 2
#   scripts/lab-pool.sh nfs [stop]  an NFS server the hosts share (nfs-ganesha at 10.213.0.5)
#   scripts/lab-pool.sh ceph        a single-node Ceph cluster beside it (monitor 10.213.0.5:6789)
#   scripts/lab-pool.sh down        remove everything (daemons, VMs, namespaces, switch, data)
# The lab itself is test/helpers/lab.ts, the same the integration tests use. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
[ -f dist/test/helpers/lab-cli.js ] || npx tsc -p .
exec node dist/test/helpers/lab-cli.js "$@"
