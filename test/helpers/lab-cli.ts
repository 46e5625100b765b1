// scripts/lab-pool.sh: the commands of a lab on this machine (test/helpers/lab.ts), for people.
// The script's lab is lab 0 (10.213.0.0/24); it keeps running after `up` until `down`.
import { randomBytes } from 'node:crypto'
import { alive } from '../../src/lib/process.js'
import { Lab, SCRIPT_LAB, type LabHost } from './lab.js'
import { CephServer } from './ceph-server.js'
import { NfsServer } from './nfs-server.js'

const USAGE = `usage: scripts/lab-pool.sh up N | down | status | cut I [link] | heal I | kill I | restart I | nfs [stop] | ceph`

async function answers(h: LabHost): Promise<boolean> {
  try {
    await fetch(`${h.url}/`, { signal: AbortSignal.timeout(2000) })
    return true
  } catch {
    return false
  }
}

async function describe(lab: Lab, withState: boolean): Promise<void> {
  console.log(`lab ${lab.number}: ${lab.hosts.length} hosts, each a standalone pool; user root, password ${lab.password}`)
  for (const h of lab.hosts) {
    const pid = h.daemonPid
    const state = !withState ? '' : !pid || !h.pids().includes(pid) ? '  [daemon not running]' : (await answers(h)) ? '  [answers]' : '  [no answer: cut?]'
    console.log(`  ${h.hostname}  https://${h.address}/  (netns ${h.netns}, data ${h.dataDir}, log ${h.log})${state}`)
  }
  console.log(`xe: npx xe -s ${lab.host(1).address} -u root -pw ${lab.password} host-list`)
}

function scriptLab(): Lab {
  const lab = Lab.attach(SCRIPT_LAB)
  if (!lab) throw new Error('no lab is up (scripts/lab-pool.sh up N makes one)')
  return lab
}

function hostIndex(arg: string | undefined): number {
  const i = Number(arg)
  if (!Number.isInteger(i) || i < 1) throw new Error(USAGE)
  return i
}

async function main(argv: string[]): Promise<void> {
  const [command, arg, how] = argv
  switch (command) {
    case 'up': {
      const count = Number(arg ?? 3)
      const lab = await Lab.up(count, { number: SCRIPT_LAB, persistent: true, password: randomBytes(9).toString('base64url') })
      await describe(lab, false)
      return
    }
    case 'down':
      scriptLab().down()
      console.log('lab removed: daemons, VMs, namespaces, switch and data')
      return
    case 'status': {
      const lab = Lab.attach(SCRIPT_LAB)
      if (lab) await describe(lab, true)
      else console.log('no lab is up')
      for (const other of Lab.list().filter((s) => s.number !== SCRIPT_LAB)) {
        console.log(`lab ${other.number}: ${other.count} hosts of a test (pid ${other.owner}${other.owner && alive(other.owner) ? '' : ', gone: the next test lab removes it'})`)
      }
      return
    }
    case 'cut':
      scriptLab().cut(hostIndex(arg), how === 'link' ? 'link' : 'drop')
      return
    case 'heal':
      scriptLab().heal(hostIndex(arg))
      return
    case 'kill':
      await scriptLab().kill(hostIndex(arg))
      return
    case 'restart':
      await scriptLab().restart(hostIndex(arg))
      return
    case 'nfs': {
      // an NFS server (nfs-ganesha) the lab's hosts share, in its storage namespace
      const lab = scriptLab()
      if (arg === 'stop') {
        await lab.killStorage()
        console.log('storage servers stopped (NFS and Ceph; their files stay until down)')
        return
      }
      const nfs = await NfsServer.start(lab)
      console.log(`NFS server ${nfs.address}, export ${nfs.exportPath} (netns ${lab.storage.netns})`)
      console.log(`xe: npx xe -s ${lab.host(1).address} -u root -pw ${lab.password} sr-create type=nfs name-label=NFS shared=true device-config:server=${nfs.address} device-config:serverpath=${nfs.exportPath}`)
      return
    }
    case 'ceph': {
      // a single-node Ceph cluster beside it (stopped with `nfs stop`, which stops the storage namespace)
      const lab = scriptLab()
      const ceph = await CephServer.start(lab)
      console.log(`Ceph cluster: monitor ${ceph.monitors}, pool ${ceph.pool}, user ${ceph.user}, key ${ceph.key}`)
      console.log(`xe: npx xe -s ${lab.host(1).address} -u root -pw ${lab.password} sr-create type=rbd name-label=Ceph shared=true device-config:monitors=${ceph.monitors} device-config:pool=${ceph.pool} device-config:user=${ceph.user} device-config:key=${ceph.key}`)
      return
    }
    default:
      throw new Error(USAGE)
  }
}

main(process.argv.slice(2)).catch((err: Error) => {
  console.error(`lab-pool: ${err.message}`)
  process.exit(1)
})
