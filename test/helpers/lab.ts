// A lab of Flotilla hosts on one machine, for tests and demos (scripts/lab-pool.sh): each host is a
// network namespace with one veth, eth0, on a switch bridge in a namespace of its own (so the root
// namespace's iptables and bridge-nf settings stay out of the path, reference/pool-lab.md §1), and
// runs its own `flotilla serve --address <its IP>` on ports 80/443 with its own data dir (its own
// etcd: a standalone host). Its daemons may bridge eth0 (FLOTILLA_BRIDGE_MANAGEMENT=1), so the
// management PIF's network reaches the switch as xenbr0 does on XCP-ng. The root namespace
// reaches every host through one more veth on the switch. Everything a lab makes is written to a
// state file before it is made, so that down() removes it from any process, also after a failed
// test or an interrupted run.
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { alive } from '../../src/lib/process.js'
import { call, Daemon, jsonrpc, PASSWORD, waitFor } from './daemon.js'

const IP = 'ip'
const STATE_DIR = '/run/flotilla-lab'
/** Lab 0 is the script's (10.213.0.0/24); tests take the first free one from 1 on. */
export const SCRIPT_LAB = 0
const LAST_LAB = 254
/** Host i is 10.213.N.(10+i). */
const MAX_HOSTS = 200

/** The names and addresses of lab `number` with `count` hosts: a pure function of the two. */
export function labLayout(number: number, count: number) {
  const prefix = `flab${number}`
  const subnet = `10.213.${number}`
  return {
    switchNetns: `${prefix}-sw`,
    /** The root namespace's end of its veth to the switch (its peer there is `root`). */
    rootLink: prefix,
    rootAddress: `${subnet}.1`,
    /** A namespace for storage servers the hosts share (an NFS or Ceph server), on the lab's switch. */
    storage: { netns: `${prefix}-st`, switchPort: 'st', address: `${subnet}.5` },
    dir: join(tmpdir(), `flotilla-${prefix}`),
    hosts: Array.from({ length: count }, (_, k) => {
      const index = k + 1
      return { index, hostname: `h${index}`, netns: `${prefix}-h${index}`, switchPort: `h${index}`, address: `${subnet}.${10 + index}` }
    }),
  }
}

export interface LabState {
  number: number
  count: number
  /** The process whose exit takes the lab down, or null for a lab that outlives its maker (the script's). */
  owner: number | null
  password: string
  /** The daemons' environment beyond the machine's (FLOTILLA_* knobs). */
  env: Record<string, string>
}

export interface LabHost {
  index: number
  hostname: string
  netns: string
  address: string
  /** http://<address> (port 80); the daemon's httpsUrl is https://<address>:443. */
  url: string
  dataDir: string
  /** The daemon's output. */
  log: string
  daemon: Daemon
  /** The daemon's PID, from its pidfile. */
  daemonPid: number | undefined
  etcdPid: number | undefined
  /** Every process in the host's namespace: its daemon, etcd, QEMUs, consoles. */
  pids(): number[]
}

const stateFile = (number: number) => join(STATE_DIR, `${number}.json`)

function ip(args: string[]): string {
  return execFileSync(IP, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

/** `ip` for removals: what is already gone is no error. */
function ipQuiet(args: string[]): void {
  try {
    ip(args)
  } catch {
    // already gone
  }
}

const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

function namespaces(): Set<string> {
  return new Set(ip(['netns', 'list']).split('\n').map((l) => l.split(' ')[0]).filter(Boolean))
}

function netnsPids(netns: string): number[] {
  try {
    return ip(['netns', 'pids', netns]).split('\n').filter(Boolean).map(Number)
  } catch {
    return [] // no such namespace
  }
}

/** SIGKILLs every process in a namespace, as a power loss does, until none is left; returns their PIDs. */
function killNetns(netns: string): number[] {
  const killed = new Set<number>()
  for (let round = 0; round < 100; round++) {
    const pids = netnsPids(netns)
    if (pids.length === 0) return [...killed]
    for (const pid of pids) {
      killed.add(pid)
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // exited meanwhile
      }
    }
    sleepSync(20)
  }
  throw new Error(`processes ${netnsPids(netns).join(' ')} in ${netns} survive SIGKILL`)
}

function readPid(file: string): number | undefined {
  return existsSync(file) ? Number(readFileSync(file, 'utf8')) || undefined : undefined
}

/** Removes everything of a lab: its processes, namespaces, veths, bridge, files. Synchronous, so it also runs at process exit. */
function teardown(state: LabState): void {
  const layout = labLayout(state.number, state.count)
  const present = namespaces()
  for (const netns of [...layout.hosts.map((h) => h.netns), layout.storage.netns]) {
    killNetns(netns)
    if (present.has(netns)) ipQuiet(['netns', 'del', netns])
  }
  // Deleting a namespace frees its devices later, in the kernel's own time: the root end of the
  // switch veth is deleted here so that it is gone when down() returns.
  ipQuiet(['link', 'del', 'dev', layout.rootLink])
  if (present.has(layout.switchNetns)) ipQuiet(['netns', 'del', layout.switchNetns])
  rmSync(layout.dir, { recursive: true, force: true })
  rmSync(stateFile(state.number), { force: true })
}

function readState(number: number): LabState | undefined {
  try {
    return JSON.parse(readFileSync(stateFile(number), 'utf8')) as LabState
  } catch {
    return undefined
  }
}

/** Writes the state of lab `number` unless another live lab has it; a lab whose owner died is removed first. */
function claim(state: LabState): boolean {
  mkdirSync(STATE_DIR, { recursive: true })
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(stateFile(state.number), JSON.stringify(state), { flag: 'wx' })
      return true
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const other = readState(state.number)
      if (!other || other.owner === null || alive(other.owner)) return false
      teardown(other)
    }
  }
  return false
}

export class Lab {
  readonly hosts: LabHost[]
  private readonly layout: ReturnType<typeof labLayout>
  private isDown = false
  private readonly onExit = () => this.down()
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.down()
    process.exit(signal === 'SIGINT' ? 130 : 143)
  }

  private constructor(readonly state: LabState) {
    this.layout = labLayout(state.number, state.count)
    this.hosts = this.layout.hosts.map((h) => {
      const dataDir = join(this.layout.dir, h.hostname)
      const log = join(this.layout.dir, `${h.hostname}.log`)
      const daemon = new Daemon({ dataDir, address: h.address, httpPort: 80, httpsPort: 443, netns: { name: h.netns, hostname: h.hostname }, logFile: log, env: { FLOTILLA_BRIDGE_MANAGEMENT: '1', ...state.env, FLOTILLA_ROOT_PASSWORD: state.password } })
      return {
        ...h,
        url: `http://${h.address}`,
        dataDir,
        log,
        daemon,
        get daemonPid() {
          return readPid(join(dataDir, 'run', 'flotilla.pid'))
        },
        get etcdPid() {
          return daemon.etcdPid
        },
        pids: () => netnsPids(h.netns),
      }
    })
  }

  /**
   * Builds `count` hosts and starts their daemons. Without `number`, the lab takes the first free
   * one from 1 on and goes down when this process exits (also on SIGINT/SIGTERM); `persistent`
   * labs outlive this process (the script's).
   */
  static async up(count: number, opts: { number?: number; persistent?: boolean; password?: string; env?: Record<string, string> } = {}): Promise<Lab> {
    if (!Number.isInteger(count) || count < 1 || count > MAX_HOSTS) throw new Error(`a lab has 1 to ${MAX_HOSTS} hosts, not ${count}`)
    const state = (number: number): LabState => ({ number, count, owner: opts.persistent ? null : process.pid, password: opts.password ?? PASSWORD, env: opts.env ?? {} })
    let claimed: LabState | undefined
    if (opts.number !== undefined) {
      if (claim(state(opts.number))) claimed = state(opts.number)
      else throw new Error(`lab ${opts.number} is up (scripts/lab-pool.sh down removes it)`)
    } else {
      for (let n = 1; n <= LAST_LAB && !claimed; n++) if (claim(state(n))) claimed = state(n)
      if (!claimed) throw new Error(`no free lab number in ${STATE_DIR}`)
    }
    const lab = new Lab(claimed)
    if (!opts.persistent) {
      process.once('exit', lab.onExit)
      process.once('SIGINT', lab.onSignal)
      process.once('SIGTERM', lab.onSignal)
    }
    try {
      lab.build()
      await Promise.all(lab.hosts.map((h) => h.daemon.start()))
    } catch (err) {
      lab.down()
      throw err
    }
    return lab
  }

  /** The lab `number` made earlier, by this or another process (the script's later commands). */
  static attach(number: number): Lab | undefined {
    const state = readState(number)
    return state && new Lab(state)
  }

  /** The labs whose state files exist. */
  static list(): LabState[] {
    const files = existsSync(STATE_DIR) ? readdirSync(STATE_DIR).filter((f) => /^\d+\.json$/.test(f)) : []
    return files.map((f) => readState(Number(f.split('.')[0]))).filter((s): s is LabState => s !== undefined)
  }

  get number(): number {
    return this.state.number
  }

  get password(): string {
    return this.state.password
  }

  /** Host i, from 1. */
  host(i: number): LabHost {
    const h = this.hosts[i - 1]
    if (!h) throw new Error(`the lab has hosts 1 to ${this.hosts.length}, not ${i}`)
    return h
  }

  /** The namespaces this lab made (the switch's, every host's and the storage servers'). */
  get namespaces(): string[] {
    return [this.layout.switchNetns, ...this.hosts.map((h) => h.netns), this.layout.storage.netns]
  }

  /** The storage servers' namespace and address (test/helpers/nfs-server.ts runs one there). */
  get storage(): { netns: string; address: string } {
    return { netns: this.layout.storage.netns, address: this.layout.storage.address }
  }

  /** The storage servers' power loss: SIGKILL of every process in their namespace, reaped. */
  async killStorage(): Promise<void> {
    const killed = killNetns(this.layout.storage.netns)
    for (let waited = 0; killed.some(alive); waited += 50) {
      if (waited > 30_000) throw new Error(`processes ${killed.filter(alive).join(' ')} of ${this.layout.storage.netns} are not reaped`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  get rootLink(): string {
    return this.layout.rootLink
  }

  get dir(): string {
    return this.layout.dir
  }

  private build(): void {
    const { switchNetns: sw, rootLink, rootAddress, dir } = this.layout
    rmSync(dir, { recursive: true, force: true })
    mkdirSync(dir, { recursive: true })
    ip(['netns', 'add', sw])
    ip(['-n', sw, 'link', 'add', 'br0', 'type', 'bridge'])
    ip(['-n', sw, 'link', 'set', 'br0', 'up'])
    ip(['link', 'add', rootLink, 'type', 'veth', 'peer', 'name', 'root', 'netns', sw])
    ip(['-n', sw, 'link', 'set', 'root', 'master', 'br0', 'up'])
    ip(['addr', 'add', `${rootAddress}/24`, 'dev', rootLink])
    ip(['link', 'set', rootLink, 'up'])
    for (const { netns, switchPort, address } of [...this.layout.hosts, this.layout.storage]) {
      ip(['netns', 'add', netns])
      ip(['-n', sw, 'link', 'add', switchPort, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns])
      ip(['-n', sw, 'link', 'set', switchPort, 'master', 'br0', 'up'])
      ip(['-n', netns, 'addr', 'add', `${address}/24`, 'dev', 'eth0'])
      ip(['-n', netns, 'link', 'set', 'eth0', 'up'])
      ip(['-n', netns, 'link', 'set', 'lo', 'up'])
    }
  }

  /**
   * Cuts host i off. 'drop' (the default; pool-lab.md's "partitioned but alive"): iptables inside
   * the host drops everything but loopback, its link stays up, so nothing tells its programs;
   * that is the case fail-over must survive. 'link' ("cable pulled"): its switch port goes down
   * and its eth0 loses carrier; it also cuts traffic bridged onto eth0 (VMs on a pool network),
   * which iptables does not see (Flotilla's bridges set nf_call_iptables to 0).
   */
  cut(i: number, how: 'drop' | 'link' = 'drop'): void {
    const h = this.host(i)
    if (how === 'link') ip(['-n', this.layout.switchNetns, 'link', 'set', this.layout.hosts[i - 1].switchPort, 'down'])
    else for (const rule of DROP_RULES) ip(['netns', 'exec', h.netns, 'iptables', '-w', '-I', ...rule])
  }

  /** Undoes cut(i), whichever way it was cut. */
  heal(i: number): void {
    const h = this.host(i)
    ip(['-n', this.layout.switchNetns, 'link', 'set', this.layout.hosts[i - 1].switchPort, 'up'])
    for (const rule of DROP_RULES) {
      for (;;) {
        try {
          ip(['netns', 'exec', h.netns, 'iptables', '-w', '-C', ...rule])
        } catch {
          break // no such rule (left)
        }
        ip(['netns', 'exec', h.netns, 'iptables', '-w', '-D', ...rule])
      }
    }
  }

  /**
   * Power loss of host i: SIGKILL of every process in its namespace (daemon, etcd, QEMUs). Returns
   * once they are reaped too (orphans are reaped by PID 1, here up to 2 s later): until then a
   * restarted daemon would take the old one's PID file for a live daemon.
   */
  async kill(i: number): Promise<void> {
    const h = this.host(i)
    h.daemon.expectExit()
    const killed = killNetns(h.netns)
    for (let waited = 0; killed.some(alive); waited += 50) {
      if (waited > 30_000) throw new Error(`processes ${killed.filter(alive).join(' ')} of ${h.netns} are not reaped`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  /** Host i joins host `master`'s pool (xe pool-join); returns once it answers as a member (HOST_IS_SLAVE). */
  async join(i: number, master = 1): Promise<void> {
    const url = this.host(i).url
    const session = await call<string>(url, 'session.login_with_password', 'root', this.password)
    const r = await jsonrpc(url, 'pool.join', [session, this.host(master).address, 'root', this.password], { resend: false })
    if (r.error) throw new Error(`host ${i} joining host ${master}'s pool: ${JSON.stringify(r.error)}`)
    await waitFor(`host ${i} to answer as a member`, async () => {
      const a = await jsonrpc(url, 'session.login_with_password', ['root', this.password, '', '']).catch(() => undefined)
      return a?.error?.message === 'HOST_IS_SLAVE' || undefined
    }, 90_000)
  }

  /** Starts host i's daemon again on the same data dir (after kill(i), as the host boots again). */
  async restart(i: number): Promise<void> {
    await this.host(i).daemon.start()
  }

  /** Runs a program inside host i's namespace (the program must be in a programs table). */
  exec(i: number, program: string, args: string[]): string {
    return ip(['netns', 'exec', this.host(i).netns, program, ...args])
  }

  /** The pool database's members as etcd lists them from host i's namespace (names are host uuids, empty until started). */
  etcdMembers(i: number): { name: string; learner: boolean }[] {
    const h = this.host(i)
    const ports = JSON.parse(readFileSync(join(h.dataDir, 'etcd-ports.json'), 'utf8')) as { client: number }
    const pool = join(h.dataDir, 'pool')
    const out = this.exec(i, 'etcdctl', ['--endpoints', `https://${h.address}:${ports.client}`, '--cacert', `${pool}/ca.pem`, '--cert', `${pool}/host.pem`, '--key', `${pool}/host-key.pem`, 'member', 'list', '-w', 'json'])
    return (JSON.parse(out) as { members: { name: string; isLearner?: boolean }[] }).members.map((m) => ({ name: m.name, learner: Boolean(m.isLearner) }))
  }

  /**
   * For an afterEach hook: when the test failed, its hosts' last log lines go to stderr (a CI run
   * keeps only its output, and a lab's logs go with the lab).
   */
  reportFailure(t: { name: string }, lines = 40): void {
    // Node 24 sets `passed` on the context (@types/node does not declare it yet).
    if ((t as { passed?: boolean }).passed !== false || this.isDown) return
    for (const h of this.hosts) {
      if (!existsSync(h.log)) continue
      const tail = readFileSync(h.log, 'utf8').split('\n').filter((l) => l && !/DEP0123|trace-deprecation|^\s+at /.test(l)).slice(-lines)
      process.stderr.write(`--- ${h.hostname}'s log, last ${tail.length} lines (after "${t.name}" failed, ${new Date().toISOString()})\n${tail.join('\n')}\n`)
    }
  }

  /** Removes everything the lab made; safe to call twice. */
  down(): void {
    if (this.isDown) return
    this.isDown = true
    process.off('exit', this.onExit)
    process.off('SIGINT', this.onSignal)
    process.off('SIGTERM', this.onSignal)
    for (const h of this.hosts) h.daemon.expectExit()
    // FLOTILLA_LAB_LOGS=<dir> keeps the daemons' logs (lab<N>-h<i>.log) for a failure to be read after.
    const keep = process.env.FLOTILLA_LAB_LOGS
    if (keep) for (const h of this.hosts) if (existsSync(h.log)) copyFileSync(h.log, join(keep, `lab${this.state.number}-${h.hostname}.log`))
    teardown(this.state)
  }
}

/** iptables rules (after -I/-C/-D) that cut a host off but for its loopback. */
const DROP_RULES = [
  ['INPUT', '!', '-i', 'lo', '-j', 'DROP'],
  ['OUTPUT', '!', '-o', 'lo', '-j', 'DROP'],
]
