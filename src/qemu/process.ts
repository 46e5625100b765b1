// QEMU processes that outlive the daemon: launched in their own session with output to a log
// in the run directory, found again after a daemon restart by pidfile + /proc + -uuid.
import { spawn } from 'node:child_process'
import { mkdir, open, readdir, readFile, rm } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { qemuArgv, runPaths, type RunPaths } from './argv.js'
import type { QemuVmConfig } from './config.js'
import { imageLockedError } from './errors.js'
import { QmpClient } from './qmp.js'
import { programPath } from '../lib/programs.js'

export interface QemuProcess {
  pid: number
  uuid: string
  paths: RunPaths
  qmp: QmpClient
}

export class QemuStartError extends Error {
  constructor(
    message: string,
    /** What QEMU printed during this launch. */
    readonly output: string,
  ) {
    super(output.trim() ? `${message}:\n${output.trim()}` : message)
    this.name = 'QemuStartError'
  }
}

const POLL_MS = 20

/**
 * Starts QEMU detached (own session, no stdio tied to us, unref'd) and resolves once QMP
 * answers, which QEMU does only after every device and image opened. A failed start
 * rejects with the log excerpt, or ImageLockedError when a disk is in use elsewhere.
 */
export async function launchQemu(
  config: QemuVmConfig,
  opts: { readyTimeoutMs?: number } = {},
): Promise<QemuProcess> {
  const argv = qemuArgv(config)
  const paths = runPaths(config.runDir)
  await mkdir(config.runDir, { recursive: true, mode: 0o700 })
  const running = await runningPid(config.runDir, config.uuid)
  if (running !== undefined) throw new Error(`VM ${config.uuid} already runs as QEMU pid ${running}`)
  await Promise.all([paths.qmp, paths.pidfile].map((file) => rm(file, { force: true })))

  const { child, logStart } = await spawnDetached(argv, paths.log)
  const exited = new AbortController()
  child.once('exit', () => exited.abort(new Error('QEMU exited')))
  const spawnFailed = new Promise<Error>((resolve) => child.once('error', resolve))
  try {
    const qmp = await Promise.race([
      QmpClient.connect(paths.qmp, { timeoutMs: opts.readyTimeoutMs ?? 30_000, signal: exited.signal }),
      spawnFailed.then((err) => Promise.reject(err)),
    ])
    await checkPidfile(paths.pidfile, child.pid!)
    return { pid: child.pid!, uuid: config.uuid, paths, qmp }
  } catch (err) {
    if (child.pid !== undefined && !exited.signal.aborted) await terminate(child.pid, 0)
    const output = await readFrom(paths.log, logStart)
    throw imageLockedError(output) ?? new QemuStartError(`QEMU for VM ${config.uuid} did not start (${(err as Error).message})`, output)
  }
}

async function spawnDetached(argv: string[], logPath: string) {
  const log = await open(logPath, 'a', 0o600)
  try {
    const logStart = (await log.stat()).size
    await log.write(`${new Date().toISOString()} flotilla: launching qemu-system-x86_64 ${argv.join(' ')}\n`)
    // detached: a new session, so the daemon's signals and exit never reach QEMU.
    const child = spawn(programPath('qemu-system-x86_64'), argv, { detached: true, stdio: ['ignore', log.fd, log.fd] })
    child.unref()
    return { child, logStart }
  } finally {
    await log.close()
  }
}

async function checkPidfile(pidfile: string, pid: number): Promise<void> {
  const written = await readPidfile(pidfile)
  if (written !== pid) throw new Error(`pidfile ${pidfile} holds ${written}, expected ${pid}`)
}

async function readFrom(path: string, offset: number): Promise<string> {
  const text = await readFile(path).catch(() => Buffer.alloc(0))
  return text.subarray(offset).toString('utf8')
}

/** Finds the QEMU of VM `uuid` in `runDir` after a daemon restart; undefined when none runs. */
export async function attachQemu(runDir: string, uuid: string, opts: { timeoutMs?: number } = {}): Promise<QemuProcess | undefined> {
  const pid = await runningPid(runDir, uuid)
  if (pid === undefined) return undefined
  const paths = runPaths(runDir)
  const qmp = await QmpClient.connect(paths.qmp, { timeoutMs: opts.timeoutMs ?? 5_000 })
  return { pid, uuid, paths, qmp }
}

/** The VM uuids of the QEMUs still running from the run directories under `vmsDir` (each reads its own -uuid). */
export async function runningUuids(vmsDir: string): Promise<string[]> {
  const dirs = await readdir(vmsDir).catch(() => [] as string[])
  const uuids: string[] = []
  for (const dir of dirs) {
    const pid = await readPidfile(runPaths(join(vmsDir, dir)).pidfile)
    const args = pid === undefined ? [] : (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0')
    const uuid = args[args.indexOf('-uuid') + 1]
    if (basename(args[0] ?? '').startsWith('qemu-system') && args.includes('-uuid') && uuid) uuids.push(uuid)
  }
  return uuids
}

/** The pid in runDir's pidfile, if that process is still a qemu-system started for `uuid` (pids get reused). */
export async function runningPid(runDir: string, uuid: string): Promise<number | undefined> {
  const pid = await readPidfile(runPaths(runDir).pidfile)
  return pid !== undefined && (await isQemuFor(pid, uuid)) ? pid : undefined
}

async function readPidfile(pidfile: string): Promise<number | undefined> {
  const text = await readFile(pidfile, 'utf8').catch(() => '')
  const pid = Number.parseInt(text.trim(), 10)
  return Number.isInteger(pid) && pid > 0 ? pid : undefined
}

async function isQemuFor(pid: number, uuid: string): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
  const args = cmdline.split('\0')
  return basename(args[0] ?? '').startsWith('qemu-system') && args[args.indexOf('-uuid') + 1] === uuid
}

/** Stops a VM's QEMU (SIGTERM: QEMU shuts down cleanly; SIGKILL after graceMs), once sure the pid is still that QEMU. */
export async function killQemu(proc: Pick<QemuProcess, 'pid' | 'uuid'>, graceMs = 10_000): Promise<void> {
  if (!(await isQemuFor(proc.pid, proc.uuid))) return
  await terminate(proc.pid, graceMs)
}

/** SIGTERM, then SIGKILL if still alive after graceMs; resolves once the process is gone. */
export async function terminate(pid: number, graceMs: number): Promise<'exited' | 'killed'> {
  signal(pid, 'SIGTERM')
  if (await waitForExit(pid, graceMs)) return 'exited'
  signal(pid, 'SIGKILL')
  if (await waitForExit(pid, 10_000)) return 'killed'
  throw new Error(`process ${pid} survived SIGKILL`)
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
  }
}

/** Polls /proc (the pid need not be our child); a zombie counts as gone. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (await isAlive(pid)) {
    if (Date.now() >= deadline) return false
    await sleep(POLL_MS)
  }
  return true
}

async function isAlive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
  return stat !== '' && state !== 'Z'
}
