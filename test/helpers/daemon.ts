// Starts a real Flotilla daemon (as the README does, with its own data dir, loopback address and
// free ports) for a test, and stops it, its etcd and its files afterwards, also on failure.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { alive } from '../../src/lib/process.js'

export const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..')
export const PASSWORD = 'flotilla-test-password'

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => res(port))
    })
  })
}

export interface DaemonOptions {
  env?: Record<string, string>
  dataDir?: string
  httpPort?: number
  httpsPort?: number
  requestLog?: boolean
  /** The management address the daemon serves on (default loopback). */
  address?: string
}

export class Daemon {
  child!: ChildProcess
  output = ''
  /** Daemon processes this object stopped or killed itself: their exit is no news. */
  private readonly exitExpected = new WeakSet<ChildProcess>()
  readonly dataDir: string
  httpPort = 0
  httpsPort = 0
  readonly requestLogFile: string | undefined
  private readonly ownsDataDir: boolean

  constructor(private readonly opts: DaemonOptions = {}) {
    this.ownsDataDir = !opts.dataDir
    this.dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'flotilla-test-'))
    this.requestLogFile = opts.requestLog ? join(this.dataDir, 'requests.log') : undefined
  }

  get address(): string {
    return this.opts.address ?? '127.0.0.1'
  }

  get url(): string {
    return `http://${this.address}:${this.httpPort}`
  }

  get httpsUrl(): string {
    return `https://${this.address}:${this.httpsPort}`
  }

  async start(): Promise<this> {
    this.httpPort ||= this.opts.httpPort ?? (await freePort())
    this.httpsPort ||= this.opts.httpsPort ?? (await freePort())
    // FLOTILLA_DAEMON_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the daemon of a bench.
    const nodeArgs = (process.env.FLOTILLA_DAEMON_NODE_ARGS ?? '').split(' ').filter(Boolean)
    const args = [...nodeArgs, 'bin/flotilla.js', 'serve', '--data-dir', this.dataDir, '--address', this.address, '--http-port', String(this.httpPort), '--https-port', String(this.httpsPort)]
    if (this.requestLogFile) args.push('--request-log', this.requestLogFile)
    this.output = ''
    this.child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { ...process.env, FLOTILLA_ROOT_PASSWORD: PASSWORD, ...this.opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const child = this.child
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`daemon did not get ready:\n${this.output}`)), 60_000)
      const onData = (d: Buffer) => {
        this.output += d.toString()
        if (this.output.includes('flotilla ready')) {
          clearTimeout(timer)
          res()
        }
      }
      child.stdout!.on('data', onData)
      child.stderr!.on('data', onData)
      child.once('exit', (code, signal) => {
        clearTimeout(timer)
        rej(new Error(`daemon exited with ${code}:\n${this.output}`))
        // A daemon dying under a test shows as a closed connection: say why in the test's output.
        if (!this.exitExpected.has(child)) process.stderr.write(`daemon at ${this.url} died (${signal ?? `exit code ${code}`}); its last output:\n${this.output.slice(-8000)}\n`)
      })
    })
    return this
  }

  get etcdPid(): number | undefined {
    const file = join(this.dataDir, 'run', 'etcd.pid')
    return existsSync(file) ? Number(readFileSync(file, 'utf8')) : undefined
  }

  /** SIGTERM, as an administrator stops it; waits for the exit. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    const exited = new Promise((res) => this.child.once('exit', res))
    this.exitExpected.add(this.child)
    this.child.kill('SIGTERM')
    await exited
  }

  /** kill -9 of the daemon (and, if asked, of its etcd), as a crash would. */
  async crash(alsoEtcd: boolean): Promise<void> {
    const etcd = this.etcdPid
    const exited = new Promise((res) => this.child.once('exit', res))
    this.exitExpected.add(this.child)
    this.child.kill('SIGKILL')
    await exited
    if (alsoEtcd && etcd) killAndWait(etcd)
  }

  /** Stops everything this daemon started (its etcd, VMs left running, their taps, its bridges) and removes its data dir. */
  async dispose(): Promise<void> {
    await this.stop().catch(() => undefined)
    const etcd = this.etcdPid
    if (etcd) killAndWait(etcd)
    const vmDirs = join(this.dataDir, 'run', 'vm')
    const vmIds = existsSync(vmDirs) ? readdirSync(vmDirs) : []
    for (const id of vmIds) {
      const pidfile = join(vmDirs, id, 'qemu.pid')
      if (existsSync(pidfile)) killAndWait(Number(readFileSync(pidfile, 'utf8')))
    }
    const identity = join(this.dataDir, 'identity.json')
    if (existsSync(identity)) {
      const hostUuid = (JSON.parse(readFileSync(identity, 'utf8')) as { hostUuid: string }).hostUuid.replace(/-/g, '')
      const links = execFileSync('ip', ['-o', 'link', 'show']).toString().split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '')
      const ours = links.filter((name) => name.startsWith(`f${hostUuid.slice(0, 6)}`) || vmIds.some((id) => name.startsWith(`t${id.slice(0, 10)}`)))
      for (const name of ours) execFileSync('ip', ['link', 'del', 'dev', name], { stdio: 'ignore' })
    }
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true })
  }

  /** What the serial console of a running VM has printed so far. */
  serial(vmUuid: string): string {
    const file = join(this.dataDir, 'run', 'vm', vmUuid.replace(/-/g, '').slice(0, 12), 'serial.log')
    return existsSync(file) ? readFileSync(file, 'utf8') : ''
  }

  requests(): string[] {
    return this.requestLogFile && existsSync(this.requestLogFile) ? readFileSync(this.requestLogFile, 'utf8').trim().split('\n') : []
  }
}

function killAndWait(pid: number): void {
  if (!alive(pid)) return
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    return
  }
  const deadline = Date.now() + 5000
  while (alive(pid) && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20)
}

/** A JSON-RPC call, returning the parsed response. */
export async function jsonrpc(url: string, method: string, params: unknown[]): Promise<{ result?: unknown; error?: { code: number; message: string; data: string[] } }> {
  const res = await fetch(`${url}/jsonrpc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', method, params, id: 0 }) })
  return (await res.json()) as { result?: unknown; error?: { code: number; message: string; data: string[] } }
}

/** A JSON-RPC call that must succeed. */
export async function call<T = unknown>(url: string, method: string, ...params: unknown[]): Promise<T> {
  const r = await jsonrpc(url, method, params)
  if (r.error) throw Object.assign(new Error(`${method}: ${r.error.message}(${r.error.data.join(', ')})`), { code: r.error.message, params: r.error.data })
  return r.result as T
}

export async function login(url: string): Promise<string> {
  return call<string>(url, 'session.login_with_password', 'root', PASSWORD)
}

/** Polls until `probe` returns a value (not undefined/false), or fails after `ms`. */
export async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await probe()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}
