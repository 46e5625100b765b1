// Starts a real Flotilla daemon (as the README does, with its own data dir, loopback address and
// free ports) for a test, and stops it, its etcd and its files afterwards, also on failure.
// A daemon can also run inside a network namespace, as one host of a lab (test/helpers/lab.ts).
import { execFileSync, spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from '../../src/lib/ports.js'
import { alive } from '../../src/lib/process.js'

export const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..')
export const PASSWORD = 'flotilla-test-password'

export interface DaemonOptions {
  env?: Record<string, string>
  dataDir?: string
  httpPort?: number
  httpsPort?: number
  requestLog?: boolean
  /** The management address the daemon serves on (default loopback). */
  address?: string
  /** Run inside this network namespace (`ip netns exec`), in a UTS namespace of its own named `hostname`. */
  netns?: { name: string; hostname: string }
  /** Write the daemon's output to this file, in a session of its own, so it outlives this process. */
  logFile?: string
}

const IP = 'ip'
/** Sets the hostname of the UTS namespace `unshare` made, then becomes the daemon. */
const SET_HOSTNAME_THEN_EXEC = 'hostname "$0" && exec "$@"'

export class Daemon {
  child!: ChildProcess
  private piped = ''
  private logStart = 0
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

  /** What the daemon has printed since its last start. */
  get output(): string {
    const log = this.opts.logFile
    if (!log) return this.piped
    return existsSync(log) ? readFileSync(log).subarray(this.logStart).toString() : ''
  }

  async start(): Promise<this> {
    this.httpPort ||= this.opts.httpPort ?? (await freePort())
    this.httpsPort ||= this.opts.httpsPort ?? (await freePort())
    // FLOTILLA_DAEMON_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the daemon of a bench.
    const nodeArgs = (process.env.FLOTILLA_DAEMON_NODE_ARGS ?? '').split(' ').filter(Boolean)
    const args = [...nodeArgs, 'bin/flotilla.js', 'serve', '--data-dir', this.dataDir, '--address', this.address, '--http-port', String(this.httpPort), '--https-port', String(this.httpsPort)]
    if (this.requestLogFile) args.push('--request-log', this.requestLogFile)
    this.piped = ''
    const env = { ...process.env, FLOTILLA_ROOT_PASSWORD: PASSWORD, ...this.opts.env }
    const log = this.opts.logFile
    this.logStart = log && existsSync(log) ? statSync(log).size : 0
    const logFd = log ? openSync(log, 'a') : undefined
    const stdio: StdioOptions = logFd === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', logFd, logFd]
    const ns = this.opts.netns
    this.child = ns
      ? spawn(IP, ['netns', 'exec', ns.name, 'unshare', '--uts', '--', 'sh', '-c', SET_HOSTNAME_THEN_EXEC, ns.hostname, process.execPath, ...args], { cwd: ROOT, env, stdio, detached: !!log })
      : spawn(process.execPath, args, { cwd: ROOT, env, stdio, detached: !!log })
    if (logFd !== undefined) {
      closeSync(logFd)
      this.child.unref()
    }
    const child = this.child
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => {
        clearInterval(poll)
        rej(new Error(`daemon did not get ready:\n${this.output}`))
      }, 60_000)
      const ready = () => {
        if (!this.output.includes('flotilla ready')) return
        clearTimeout(timer)
        clearInterval(poll)
        res()
      }
      // A log file is polled; piped output says when it comes.
      const poll = log ? setInterval(ready, 100) : undefined
      const onData = (d: Buffer) => {
        this.piped += d.toString()
        ready()
      }
      child.stdout?.on('data', onData)
      child.stderr?.on('data', onData)
      child.once('exit', (code, signal) => {
        clearTimeout(timer)
        clearInterval(poll)
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

  /** The daemon is about to be killed from outside (a host's power loss): its exit is no news. */
  expectExit(): void {
    if (this.child) this.exitExpected.add(this.child)
  }

  /** SIGTERM, as an administrator stops it; waits for the exit. */
  async stop(): Promise<void> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return
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
      const inNetns = this.opts.netns ? ['-n', this.opts.netns.name] : []
      const links = execFileSync('ip', [...inNetns, '-o', 'link', 'show']).toString().split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '')
      const ours = links.filter((name) => name.startsWith(`f${hostUuid.slice(0, 6)}`) || vmIds.some((id) => name.startsWith(`t${id.slice(0, 10)}`)))
      for (const name of ours) execFileSync('ip', [...inNetns, 'link', 'del', 'dev', name], { stdio: 'ignore' })
    }
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true })
  }

  /** What the serial console of a running VM has printed so far. */
  serial(vmUuid: string): string {
    const file = join(this.vmRunDir(vmUuid), 'serial.log')
    return existsSync(file) ? readFileSync(file, 'utf8') : ''
  }

  /** The PID of a running VM's QEMU, from its pidfile. */
  qemuPid(vmUuid: string): number | undefined {
    const file = join(this.vmRunDir(vmUuid), 'qemu.pid')
    return existsSync(file) ? Number(readFileSync(file, 'utf8')) : undefined
  }

  private vmRunDir(vmUuid: string): string {
    return join(this.dataDir, 'run', 'vm', vmUuid.replace(/-/g, '').slice(0, 12))
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
export async function jsonrpc(url: string, method: string, params: unknown[], { resend = true } = {}): Promise<{ result?: unknown; error?: { code: number; message: string; data: string[] } }> {
  const send = () => fetch(`${url}/jsonrpc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', method, params, id: 0 }) })
  let res: Response
  try {
    res = await send()
  } catch (err) {
    // A test whose event loop was busy (hashing or reading hundreds of MiB) for longer than the
    // server keeps an idle connection (keep-alive 5 s, closed after 6 s) reuses a pooled
    // connection the server has closed: undici's own keep-alive timer could not run to retire it.
    // Measured: blocked 5.5 s fine, 6.5 s "other side closed". The request never reached the
    // server, so it is sent once more, and said so in the test's output; a dead daemon still fails.
    const cause = (err as { cause?: { code?: string; message?: string; socket?: unknown } }).cause
    if (!resend || cause?.code !== 'UND_ERR_SOCKET') throw err
    process.stderr.write(`jsonrpc ${method}: ${cause.message} before an answer (${JSON.stringify(cause.socket)}); sent again\n`)
    res = await send()
  }
  return (await res.json()) as { result?: unknown; error?: { code: number; message: string; data: string[] } }
}

/** A JSON-RPC call that must succeed. */
export async function call<T = unknown>(url: string, method: string, ...params: unknown[]): Promise<T> {
  return answerOf<T>(method, await jsonrpc(url, method, params))
}

/** A call that is never sent twice: for load that runs while the test kills the daemon. */
export async function callOnce<T = unknown>(url: string, method: string, ...params: unknown[]): Promise<T> {
  return answerOf<T>(method, await jsonrpc(url, method, params, { resend: false }))
}

function answerOf<T>(method: string, r: Awaited<ReturnType<typeof jsonrpc>>): T {
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
