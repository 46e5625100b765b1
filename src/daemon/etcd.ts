// The embedded pool database server: a single-member etcd from Debian's etcd-server with its
// data, ports and compaction settings derived from the daemon's data dir. It is a child of the
// daemon; after a daemon crash the next start adopts the etcd still running for its data dir.
import { spawn, type ChildProcess } from 'node:child_process'
import { openSync, closeSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { alive } from '../lib/process.js'
import { programPath } from '../lib/programs.js'

export interface EtcdPorts {
  client: number
  peer: number
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

/** The ports this data dir's etcd uses: chosen once, then kept. */
export async function etcdPorts(dataDir: string): Promise<EtcdPorts> {
  const file = join(dataDir, 'etcd-ports.json')
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as EtcdPorts
  const ports = { client: await freePort(), peer: await freePort() }
  writeFileSync(file, JSON.stringify(ports))
  return ports
}

/** The etcd command line for a data dir (a pure function, so it can be checked without etcd). */
export function etcdArgs(dataDir: string, ports: EtcdPorts): string[] {
  const client = `http://127.0.0.1:${ports.client}`
  const peer = `http://127.0.0.1:${ports.peer}`
  return [
    '--name', 'flotilla',
    '--data-dir', join(dataDir, 'etcd'),
    '--listen-client-urls', client,
    '--advertise-client-urls', client,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `flotilla=${peer}`,
    '--initial-cluster-state', 'new',
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
  readonly endpoint: string

  private constructor(
    private readonly dataDir: string,
    private readonly ports: EtcdPorts,
  ) {
    this.endpoint = `http://127.0.0.1:${ports.client}`
  }

  static async start(dataDir: string): Promise<EtcdSupervisor> {
    const sup = new EtcdSupervisor(dataDir, await etcdPorts(dataDir))
    sup.launch()
    return sup
  }

  private get pidFile(): string {
    return join(this.dataDir, 'run', 'etcd.pid')
  }

  private launch(): void {
    const previous = existsSync(this.pidFile) ? Number(readFileSync(this.pidFile, 'utf8')) : 0
    const ours = join(this.dataDir, 'etcd')
    if (previous && alive(previous) && cmdline(previous).includes(ours)) {
      this.adoptedPid = previous
      return
    }
    const log = openSync(join(this.dataDir, 'etcd.stderr.log'), 'a')
    const child = spawn(programPath('etcd'), etcdArgs(this.dataDir, this.ports), { stdio: ['ignore', log, log] })
    closeSync(log)
    this.child = child
    writeFileSync(this.pidFile, String(child.pid))
    child.on('exit', (code, signal) => {
      if (this.stopping) return
      console.error(`etcd exited (${signal ?? code}); restarting it`)
      setTimeout(() => this.launch(), 1000)
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
}
