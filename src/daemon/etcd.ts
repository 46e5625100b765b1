// The host's member of the pool database: an etcd from Debian's etcd-server, a child of the
// daemon, with its data, ports and compaction settings derived from the daemon's data dir. A
// standalone host runs a cluster of one; a host that joined a pool runs a member of the pool's
// cluster (pool-lab §2d). Peer and client traffic is mutual TLS with the pool CA's certificates.
// After a daemon crash the next start adopts the etcd still running for its data dir.
import { spawn, type ChildProcess } from 'node:child_process'
import { openSync, closeSync, existsSync, readFileSync, writeFileSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { freePort } from '../lib/ports.js'
import { alive } from '../lib/process.js'
import { programPath, runProgram } from '../lib/programs.js'

export interface EtcdPorts {
  client: number
  peer: number
}

/** Where this host's member stands: its name in the cluster, and how it first started. */
export interface EtcdMembership {
  /** The member's name: the host's uuid (unique in a pool); "flotilla" for data dirs from before pools. */
  name: string
  /** Set while the member joins an existing cluster: the `--initial-cluster` it was added with. */
  joining?: string
  /** Where the daemon's database client connects: the client URLs of the pool's voters (absent: this member). */
  endpoints?: string[]
}

/** The files of the pool CA and of this host's certificate (PEM). */
export interface EtcdTlsFiles {
  ca: string
  cert: string
  key: string
}

export interface EtcdPlace {
  /** The address other hosts reach this host at (advertised). */
  address: string
  /** The address to listen on: the host's address, or 0.0.0.0. */
  listen: string
  ports: EtcdPorts
  tls: EtcdTlsFiles
}

/** The ports this data dir's etcd uses: chosen once, then kept. */
export async function etcdPorts(dataDir: string): Promise<EtcdPorts> {
  const file = join(dataDir, 'etcd-ports.json')
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as EtcdPorts
  const ports = { client: await freePort(), peer: await freePort() }
  writeFileSync(file, JSON.stringify(ports))
  return ports
}

const membershipFile = (dataDir: string) => join(dataDir, 'etcd-member.json')

export function readMembership(dataDir: string, hostUuid: string): EtcdMembership {
  const file = membershipFile(dataDir)
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as EtcdMembership
  return { name: existsSync(join(dataDir, 'etcd')) ? 'flotilla' : hostUuid }
}

export function writeMembership(dataDir: string, membership: EtcdMembership): void {
  writeFileSync(membershipFile(dataDir), JSON.stringify(membership))
}

const url = (host: string, port: number) => `https://${host.includes(':') ? `[${host}]` : host}:${port}`

/** The URL other members reach this member's peer port at. */
export const peerUrl = (place: EtcdPlace) => url(place.address, place.ports.peer)
/** The URL clients on other hosts reach this member at. */
export const clientUrl = (place: EtcdPlace) => url(place.address, place.ports.client)
/** The URL this host's daemon reaches its own member at. */
export const localClientUrl = (place: EtcdPlace) => url('127.0.0.1', place.ports.client)

/** The etcd command line (a pure function, so it can be checked without etcd). */
export function etcdArgs(dataDir: string, place: EtcdPlace, membership: EtcdMembership): string[] {
  const listenClients = [url(place.listen, place.ports.client)]
  if (place.listen !== '0.0.0.0' && place.listen !== '127.0.0.1') listenClients.push(localClientUrl(place))
  const peer = peerUrl(place)
  const initial = membership.joining ?? `${membership.name}=${peer}`
  return [
    '--name', membership.name,
    '--data-dir', join(dataDir, 'etcd'),
    '--listen-client-urls', listenClients.join(','),
    '--advertise-client-urls', clientUrl(place),
    '--listen-peer-urls', url(place.listen, place.ports.peer),
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', initial,
    '--initial-cluster-state', membership.joining ? 'existing' : 'new',
    '--cert-file', place.tls.cert,
    '--key-file', place.tls.key,
    '--trusted-ca-file', place.tls.ca,
    '--client-cert-auth',
    '--peer-cert-file', place.tls.cert,
    '--peer-key-file', place.tls.key,
    '--peer-trusted-ca-file', place.tls.ca,
    '--peer-client-cert-auth',
    '--auto-compaction-mode', 'revision',
    '--auto-compaction-retention', '100000',
    '--quota-backend-bytes', String(2 * 1024 ** 3),
    '--snapshot-count', '10000',
    '--pre-vote=true',
    '--logger', 'zap',
    '--log-outputs', join(dataDir, 'etcd.log'),
  ]
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')
  } catch {
    return ''
  }
}

export class EtcdSupervisor {
  private child: ChildProcess | undefined
  private adoptedPid: number | undefined
  private stopping = false

  private constructor(
    private readonly dataDir: string,
    readonly place: EtcdPlace,
    private membership: EtcdMembership,
  ) {}

  static async start(dataDir: string, place: EtcdPlace, membership: EtcdMembership): Promise<EtcdSupervisor> {
    const sup = new EtcdSupervisor(dataDir, place, membership)
    await sup.launch()
    return sup
  }

  get name(): string {
    return this.membership.name
  }

  private get pidFile(): string {
    return join(this.dataDir, 'run', 'etcd.pid')
  }

  private async launch(): Promise<void> {
    const previous = existsSync(this.pidFile) ? Number(readFileSync(this.pidFile, 'utf8')) : 0
    const ours = join(this.dataDir, 'etcd')
    if (previous && alive(previous) && cmdline(previous).includes(ours)) {
      // An etcd of an older daemon run, with another command line (plain HTTP before pools): restart it.
      if (cmdline(previous).includes('--client-cert-auth')) {
        this.adoptedPid = previous
        return
      }
      process.kill(previous, 'SIGTERM')
      for (let i = 0; i < 100 && alive(previous); i++) await new Promise((r) => setTimeout(r, 100))
    }
    const log = openSync(join(this.dataDir, 'etcd.stderr.log'), 'a')
    const child = spawn(programPath('etcd'), etcdArgs(this.dataDir, this.place, this.membership), { stdio: ['ignore', log, log] })
    closeSync(log)
    this.child = child
    writeFileSync(this.pidFile, String(child.pid))
    child.on('exit', (code, signal) => {
      if (this.stopping || this.child !== child) return
      console.error(`etcd exited (${signal ?? code}); restarting it`)
      setTimeout(() => void this.launch(), 1000)
    })
  }

  get pid(): number | undefined {
    return this.child?.pid ?? this.adoptedPid
  }

  async stop(): Promise<void> {
    this.stopping = true
    const pid = this.pid
    if (!pid || !alive(pid)) return
    process.kill(pid, 'SIGTERM')
    for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100))
    if (alive(pid)) process.kill(pid, 'SIGKILL')
  }

  /** Stops this member, changes its data dir as `arrange` does, and starts it again as `membership` says. */
  private async relaunch(membership: EtcdMembership, arrange: (data: string, aside: string) => void): Promise<void> {
    await this.stop()
    arrange(join(this.dataDir, 'etcd'), join(this.dataDir, 'etcd.previous'))
    this.membership = membership
    writeMembership(this.dataDir, membership)
    this.stopping = false
    this.child = undefined
    this.adoptedPid = undefined
    await this.launch()
  }

  /**
   * Stops this member and starts it again as a new member of another cluster (a join): the old
   * data dir is kept aside until the daemon's next start, in case the join has to be undone.
   */
  restartAs(membership: EtcdMembership): Promise<void> {
    return this.relaunch(membership, (data, aside) => {
      rmSync(aside, { recursive: true, force: true })
      if (existsSync(data)) renameSync(data, aside)
    })
  }

  /** Undoes restartAs: the member of before, on its own data again. */
  restoreAside(membership: EtcdMembership): Promise<void> {
    return this.relaunch(membership, (data, aside) => {
      if (!existsSync(aside)) return
      rmSync(data, { recursive: true, force: true })
      renameSync(aside, data)
    })
  }

  /**
   * Makes this member a cluster of one on its own data, every other member dropped
   * (emergency_transition_to_master, the pool's voters gone). etcd 3.4's --force-new-cluster
   * panics on a learner ("removed all voters"), so the member's backend file is restored as a new
   * cluster instead: keys, revisions and leases are kept (the last ~100 ms of applied changes,
   * not yet in the file, can be lost). A stopped member's file has no snapshot hash, hence
   * --skip-hash-check. The old data dir is kept aside, for restoreAside.
   */
  async restartAlone(): Promise<void> {
    const membership = { name: this.membership.name }
    const restored = join(this.dataDir, 'etcd.restored')
    await this.stop()
    rmSync(restored, { recursive: true, force: true })
    try {
      const peer = peerUrl(this.place)
      await runProgram('etcdctl', ['snapshot', 'restore', join(this.dataDir, 'etcd', 'member', 'snap', 'db'), '--skip-hash-check', '--name', membership.name, '--initial-cluster', `${membership.name}=${peer}`, '--initial-advertise-peer-urls', peer, '--data-dir', restored])
    } catch (err) {
      // The member of before, on its data as it was.
      await this.relaunch(this.membership, () => rmSync(restored, { recursive: true, force: true }))
      throw err
    }
    await this.relaunch(membership, (data, aside) => {
      rmSync(aside, { recursive: true, force: true })
      renameSync(data, aside)
      renameSync(restored, data)
    })
  }

  /** A fresh cluster of one on an empty data dir (after an eject). */
  restartFresh(membership: EtcdMembership): Promise<void> {
    return this.relaunch(membership, (data, aside) => {
      for (const dir of [data, aside]) rmSync(dir, { recursive: true, force: true })
    })
  }

  /** Notes where the pool's voters are now, for the daemon's next start. */
  noteEndpoints(endpoints: string[]): void {
    if (endpoints.length === 0 || JSON.stringify(endpoints) === JSON.stringify(this.membership.endpoints)) return
    this.membership = { ...this.membership, endpoints }
    writeMembership(this.dataDir, this.membership)
  }
}
