// The host's own console (the control domain's rfb console, xapi.md §7.7): a VNC server showing a
// terminal with the host's login prompt, as xapi's dom0 console shows dom0's. Started on the first
// connection: TigerVNC's Xvnc on a free X display, serving RFB only on a Unix socket in the run
// dir (no TCP, neither RFB nor X11; X clients need the cookie in the run dir), and an xterm on
// that display running /bin/login, started again whenever it exits (a logout gives a fresh prompt).
// When no client has been connected for `idleMs`, and when the daemon stops, both are stopped by
// PID. Their PIDs are kept in a file, so that a daemon that died without stopping them stops them
// at its next start.
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import type { Duplex } from 'node:stream'
import { join } from 'node:path'
import { programPath } from '../lib/programs.js'
import { alive } from '../lib/process.js'

export const SCREEN = { width: 1024, height: 768, depth: 24 } as const
/** The cell of the X server's built-in "fixed" font, which the xterm uses. */
const FONT_CELL = { width: 6, height: 13 } as const
/** Display numbers are tried from here up (below are the usual desktops and `vncserver`'s). */
export const FIRST_DISPLAY = 20
const LAST_DISPLAY = 999
/** sun_path is 108 bytes with its NUL. */
const MAX_UNIX_PATH = 107
export const DEFAULT_IDLE_MS = 60_000

export interface XvncConfig {
  display: number
  socket: string
  authFile: string
  name: string
  /** The file descriptor Xvnc writes its display number to once it accepts connections. */
  readyFd: number
}

/** Whether `path` fits in an AF_UNIX address. */
export function fitsUnixPath(path: string): boolean {
  return Buffer.byteLength(path) <= MAX_UNIX_PATH
}

/** Xvnc's argv: RFB on a 0600 Unix socket only, no authentication of its own (the API layer checked the session), shared. */
export function xvncArgs(c: XvncConfig): string[] {
  if (!fitsUnixPath(c.socket)) throw new Error(`the host console socket path is too long for AF_UNIX: ${c.socket}`)
  return [
    `:${c.display}`,
    '-geometry', `${SCREEN.width}x${SCREEN.height}`,
    '-depth', String(SCREEN.depth),
    '-desktop', c.name,
    '-rfbunixpath', c.socket,
    '-rfbunixmode', '0600',
    '-rfbport', '-1',
    '-SecurityTypes', 'None',
    '-AlwaysShared',
    '-nolisten', 'tcp',
    '-auth', c.authFile,
    '-noreset',
    '-displayfd', String(c.readyFd),
  ]
}

/** xterm's argv: the whole screen in the built-in font, no scrollbar, no utmp entry of its own, running login. */
export function xtermArgs(): string[] {
  const cols = Math.floor(SCREEN.width / FONT_CELL.width)
  const rows = Math.floor(SCREEN.height / FONT_CELL.height)
  return ['-fn', 'fixed', '-geometry', `${cols}x${rows}+0+0`, '-bw', '0', '-bg', 'black', '-fg', 'gray90', '+sb', '-ut', '-T', 'login', '-e', '/bin/login']
}

/** The display numbers in use, from the X lock files and sockets of /tmp. */
export function takenDisplays(tmpEntries: string[], socketEntries: string[]): Set<number> {
  const taken = new Set<number>()
  for (const e of tmpEntries) {
    const m = e.match(/^\.X(\d+)-lock$/)
    if (m) taken.add(Number(m[1]))
  }
  for (const e of socketEntries) {
    const m = e.match(/^X(\d+)$/)
    if (m) taken.add(Number(m[1]))
  }
  return taken
}

/** The lowest display number from FIRST_DISPLAY up that is neither taken nor already tried; undefined if none is left. */
export function chooseDisplay(taken: ReadonlySet<number>, tried: ReadonlySet<number> = new Set()): number | undefined {
  for (let n = FIRST_DISPLAY; n <= LAST_DISPLAY; n++) if (!taken.has(n) && !tried.has(n)) return n
  return undefined
}

/** How long to wait before starting the xterm again after it exited having run `ranMs`: at once after a session, backing off while it keeps failing. */
export function respawnDelay(ranMs: number, quickExits: number): { delayMs: number; quickExits: number } {
  if (ranMs >= 10_000) return { delayMs: 0, quickExits: 0 }
  return { delayMs: Math.min(5000, 250 * 2 ** quickExits), quickExits: quickExits + 1 }
}

/** Whether the server should go: nobody connected, and nobody since `idleMs`. */
export function shouldTearDown(clients: number, idleSince: number | undefined, now: number, idleMs: number): boolean {
  return clients === 0 && idleSince !== undefined && now - idleSince >= idleMs
}

/** An Xauthority file of one MIT-MAGIC-COOKIE-1 entry for any address and display (FamilyWild, empty number). */
export function xauthority(cookie: Buffer): Buffer {
  const field = (b: Buffer) => {
    const len = Buffer.alloc(2)
    len.writeUInt16BE(b.length)
    return Buffer.concat([len, b])
  }
  const family = Buffer.alloc(2)
  family.writeUInt16BE(0xffff)
  return Buffer.concat([family, field(Buffer.alloc(0)), field(Buffer.alloc(0)), field(Buffer.from('MIT-MAGIC-COOKIE-1')), field(cookie)])
}

interface Running {
  display: number
  socket: string
  xvnc: ChildProcess
  xterm?: ChildProcess
  respawn?: NodeJS.Timeout
  quickExits: number
  stopping: boolean
}

export interface HostConsoleOptions {
  /** A directory of its own, kept short: the RFB socket is in it. */
  dir: string
  /** The desktop name clients are shown (ServerInit). */
  name: string
  idleMs?: number
}

export class HostConsole {
  private server?: Promise<Running>
  private stopping?: Promise<void>
  private clients = 0
  private idleSince: number | undefined
  private idleTimer?: NodeJS.Timeout
  private closed = false
  private readonly idleMs: number

  constructor(private readonly opts: HostConsoleOptions) {
    this.idleMs = opts.idleMs ?? DEFAULT_IDLE_MS
  }

  private get pidFile(): string {
    return join(this.opts.dir, 'pids.json')
  }

  /** Stops what a previous daemon of this data dir left running (it died without stopping them). */
  async stopLeftovers(): Promise<void> {
    if (!existsSync(this.pidFile)) return
    let pids: number[] = []
    try {
      pids = (JSON.parse(readFileSync(this.pidFile, 'utf8')) as number[]).filter((p) => Number.isInteger(p) && p > 0)
    } catch {
      // unreadable: nothing to go by
    }
    // Only a PID that is still one of ours: Xvnc names our cookie file in its argv, the xterm in its environment.
    const authFile = join(this.opts.dir, 'xauth')
    const read = (pid: number, what: string) => {
      try {
        return readFileSync(`/proc/${pid}/${what}`, 'utf8').split('\0')
      } catch {
        return []
      }
    }
    for (const pid of pids) {
      if (read(pid, 'cmdline').includes(authFile) || read(pid, 'environ').includes(`XAUTHORITY=${authFile}`)) await stopPid(pid)
    }
    rmSync(this.pidFile, { force: true })
  }

  /** Counts `client` as connected until it closes, and returns the RFB socket of a running server (started if need be). */
  async open(client: Duplex): Promise<string> {
    if (this.closed) throw new Error('the host console is shut down')
    this.clients++
    this.idleSince = undefined
    clearTimeout(this.idleTimer)
    let counted = true
    const gone = () => {
      if (!counted) return
      counted = false
      this.clients--
      if (this.clients === 0) this.idle()
    }
    client.once('close', gone)
    try {
      if (this.stopping) await this.stopping
      this.server ??= this.launch()
      const running = await this.server
      return running.socket
    } catch (err) {
      this.server = undefined
      gone()
      throw err
    }
  }

  private idle(): void {
    this.idleSince = Date.now()
    clearTimeout(this.idleTimer)
    this.idleTimer = setTimeout(() => {
      if (shouldTearDown(this.clients, this.idleSince, Date.now(), this.idleMs)) void this.tearDown()
    }, this.idleMs)
    this.idleTimer.unref()
  }

  /** Stops the server and its xterm, if running; resolves once both are gone. */
  private tearDown(): Promise<void> {
    const server = this.server
    if (!server) return this.stopping ?? Promise.resolve()
    this.server = undefined
    const previous = this.stopping ?? Promise.resolve()
    const stopping: Promise<void> = previous
      .then(async () => {
        const running = await server.catch(() => undefined)
        if (!running) return
        running.stopping = true
        clearTimeout(running.respawn)
        if (running.xterm) await stopChild(running.xterm)
        await stopChild(running.xvnc)
        rmSync(this.pidFile, { force: true })
        rmSync(running.socket, { force: true })
      })
      .finally(() => {
        if (this.stopping === stopping) this.stopping = undefined
      })
    this.stopping = stopping
    return stopping
  }

  /** The daemon stops: no more clients, and the processes go. */
  async shutdown(): Promise<void> {
    this.closed = true
    clearTimeout(this.idleTimer)
    await this.tearDown()
  }

  private writePids(running: Running): void {
    const pids = [running.xvnc.pid, running.xterm?.pid].filter((p): p is number => p !== undefined)
    writeFileSync(this.pidFile, JSON.stringify(pids), { mode: 0o600 })
  }

  private async launch(): Promise<Running> {
    const dir = this.opts.dir
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const socket = join(dir, 'rfb.sock')
    const authFile = join(dir, 'xauth')
    writeFileSync(authFile, xauthority(randomBytes(16)), { mode: 0o600 })
    const tried = new Set<number>()
    let lastError: Error | undefined
    for (let attempt = 0; attempt < 5; attempt++) {
      const display = chooseDisplay(takenDisplays(listDir('/tmp'), listDir('/tmp/.X11-unix')), tried)
      if (display === undefined) break
      tried.add(display)
      rmSync(socket, { force: true })
      try {
        const xvnc = await startXvnc({ display, socket, authFile, name: this.opts.name, readyFd: 3 }, join(dir, 'Xvnc.log'))
        const running: Running = { display, socket, xvnc, quickExits: 0, stopping: false }
        xvnc.once('exit', () => {
          // Xvnc died on its own: the next client starts another.
          if (running.stopping) return
          running.stopping = true
          clearTimeout(running.respawn)
          if (running.xterm) void stopChild(running.xterm)
          void this.server?.then((r) => {
            if (r === running) this.server = undefined
          })
        })
        this.startXterm(running, authFile)
        return running
      } catch (err) {
        lastError = err as Error
      }
    }
    throw new Error(`could not start the host console's VNC server: ${lastError?.message ?? 'no free X display'}`)
  }

  private startXterm(running: Running, authFile: string): void {
    if (running.stopping) return
    const log = openSync(join(this.opts.dir, 'xterm.log'), 'a', 0o600)
    let xterm: ChildProcess
    try {
      xterm = spawn(programPath('xterm'), xtermArgs(), {
        detached: true,
        stdio: ['ignore', log, log],
        cwd: '/',
        env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', DISPLAY: `:${running.display}`, XAUTHORITY: authFile, LANG: process.env.LANG ?? 'C.UTF-8' },
      })
    } finally {
      closeSync(log)
    }
    xterm.on('error', (err) => console.error(`host console: xterm: ${err.message}`))
    running.xterm = xterm
    this.writePids(running)
    const started = Date.now()
    xterm.once('exit', () => {
      if (running.stopping) return
      const next = respawnDelay(Date.now() - started, running.quickExits)
      running.quickExits = next.quickExits
      running.respawn = setTimeout(() => this.startXterm(running, authFile), next.delayMs)
      running.respawn.unref()
    })
  }
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

/** Starts Xvnc and resolves once it accepts connections (it wrote its display number); rejects if it exits first. */
async function startXvnc(config: XvncConfig, logPath: string): Promise<ChildProcess> {
  const log = openSync(logPath, 'a', 0o600)
  let xvnc: ChildProcess
  try {
    xvnc = spawn(programPath('Xvnc'), xvncArgs(config), { detached: true, stdio: ['ignore', log, log, 'pipe'], cwd: '/' })
  } finally {
    closeSync(log)
  }
  const ready = xvnc.stdio[3] as NodeJS.ReadableStream
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('Xvnc did not get ready in 15 s')), 15_000)
    let text = ''
    const fail = (err: Error) => {
      clearTimeout(timer)
      if (xvnc.exitCode === null && xvnc.signalCode === null) void stopChild(xvnc)
      reject(err)
    }
    ready.on('data', (d: Buffer) => {
      text += d.toString()
      if (text.includes('\n')) {
        clearTimeout(timer)
        xvnc.off('exit', onExit)
        resolve()
      }
    })
    ready.on('error', () => undefined)
    const onExit = (code: number | null, signal: string | null) => fail(new Error(`Xvnc on display :${config.display} exited (${signal ?? code}); see ${logPath}`))
    xvnc.once('exit', onExit)
    xvnc.once('error', (err) => fail(err))
  })
  if (!existsSync(config.socket)) {
    await stopChild(xvnc)
    throw new Error(`Xvnc made no socket at ${config.socket}`)
  }
  return xvnc
}

/** SIGTERM, then SIGKILL after 3 s; resolves once the child has exited. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
  await exited
  clearTimeout(timer)
}

/** A process that is not our child (a previous daemon's): SIGTERM, then SIGKILL, polling until it is gone. */
async function stopPid(pid: number): Promise<void> {
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(pid, s)
    } catch {
      // gone
    }
  }
  signal('SIGTERM')
  for (let i = 0; i < 60 && alive(pid); i++) {
    if (i === 30) signal('SIGKILL')
    await new Promise((r) => setTimeout(r, 100))
  }
}
