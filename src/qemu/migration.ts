// Live migration of a running VM between two QEMUs over TCP (reference/qemu-lab.md §5,
// pool-lab.md §3–§4): the destination started with -incoming defer listens on its host's
// address; the source sends memory and device state with the bandwidth cap lifted and a
// progress watchdog, as QEMU 7.2 never gives up on a silent peer.
import type { QmpClient } from './qmp.js'

/** What query-migrate says, the parts we use. */
export interface MigrateInfo {
  status?: string
  'error-desc'?: string
  'total-time'?: number
  downtime?: number
  ram?: { transferred?: number; remaining?: number; total?: number }
  'socket-address'?: { type: string; host?: string; port?: string }[]
}

export interface MigrationStats {
  totalMs: number
  downtimeMs: number
  transferredBytes: number
}

export class MigrationError extends Error {
  constructor(message: string, readonly stalled = false) {
    super(message)
    this.name = 'MigrationError'
  }
}

/** A watchdog's view of a running migration: when bytes last moved. */
export interface Progress {
  transferred: number
  since: number
}

/**
 * The watchdog's decision for one look at query-migrate at time `now`: done, failed, stalled
 * (no byte sent for `stallMs`: a cut or silent peer) or still going, with the progress to keep.
 */
export function migrationStep(info: MigrateInfo, progress: Progress, now: number, stallMs: number):
  | { state: 'completed'; stats: MigrationStats }
  | { state: 'failed'; reason: string }
  | { state: 'stalled' }
  | { state: 'going'; progress: Progress } {
  const transferred = info.ram?.transferred ?? 0
  if (info.status === 'completed') return { state: 'completed', stats: { totalMs: info['total-time'] ?? 0, downtimeMs: info.downtime ?? 0, transferredBytes: transferred } }
  if (info.status === 'failed' || info.status === 'cancelled') return { state: 'failed', reason: info['error-desc'] ?? info.status }
  if (transferred > progress.transferred) return { state: 'going', progress: { transferred, since: now } }
  if (now - progress.since >= stallMs) return { state: 'stalled' }
  return { state: 'going', progress }
}

// Short: between the source completing and our noticing it, the VM runs nowhere.
const POLL_MS = 10

/** QEMU's tcp: migration URI (an IPv6 address in brackets). */
const tcpUri = (address: string, port: number) => `tcp:${address.includes(':') ? `[${address}]` : address}:${port}`

/** On a destination started with -incoming defer: listens on `address`, any free port; returns the port. */
export async function listenForMigration(qmp: QmpClient, address: string): Promise<number> {
  await qmp.execute('migrate-incoming', { uri: tcpUri(address, 0) })
  const info = await qmp.execute<MigrateInfo>('query-migrate')
  const port = Number(info['socket-address']?.find((a) => a.type === 'inet')?.port)
  if (!port) throw new MigrationError(`the destination QEMU listens on no TCP port (${JSON.stringify(info['socket-address'] ?? null)})`)
  return port
}

/**
 * Sends the VM to a destination listening at address:port. Resolves once the destination has
 * everything (the source is then in postmigrate, stopped); rejects after cancelling the
 * migration if it fails, stalls for `stallMs`, or `signal` aborts: QEMU then runs the VM on here.
 */
export async function sendMigration(qmp: QmpClient, address: string, port: number, opts: { stallMs: number; signal?: AbortSignal }): Promise<MigrationStats> {
  // The default 128 MiB/s cap triples an idle guest's migration time (qemu-lab §5); the default
  // 300 ms downtime limit is kept: lower ones corrupted dirtying guests under TCG.
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 10 * 1024 ** 3 })
  await qmp.execute('migrate', { uri: tcpUri(address, port) })
  let progress: Progress = { transferred: 0, since: Date.now() }
  for (;;) {
    const step = migrationStep(await qmp.execute<MigrateInfo>('query-migrate'), progress, Date.now(), opts.stallMs)
    if (step.state === 'completed') return step.stats
    if (step.state === 'failed') throw new MigrationError(`the migration failed: ${step.reason}`)
    if (step.state === 'stalled' || opts.signal?.aborted) {
      await qmp.execute('migrate_cancel').catch(() => undefined)
      await waitUntilSettled(qmp)
      throw step.state === 'stalled' ? new MigrationError(`the migration stalled: nothing sent for ${opts.stallMs / 1000} s`, true) : new MigrationError('the migration was cancelled')
    }
    progress = step.progress
    await new Promise((r) => setTimeout(r, POLL_MS))
  }
}

/** After migrate_cancel: QEMU is back to running the VM once the migration leaves "cancelling". */
async function waitUntilSettled(qmp: QmpClient): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const { status } = await qmp.execute<MigrateInfo>('query-migrate')
    if (status !== 'cancelling' && status !== 'active') return
    await new Promise((r) => setTimeout(r, POLL_MS))
  }
}

/** On a destination: waits until the incoming stream is all in (the vCPUs stay stopped: -S), or fails. */
export async function receivedMigration(qmp: QmpClient, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const { status } = await qmp.execute<{ status: string }>('query-status')
    if (status !== 'inmigrate') {
      const info = await qmp.execute<MigrateInfo>('query-migrate')
      if (info.status === 'failed') throw new MigrationError(`the incoming migration failed: ${info['error-desc'] ?? 'failed'}`)
      return
    }
    if (Date.now() > deadline) throw new MigrationError('the incoming migration did not end')
    await new Promise((r) => setTimeout(r, POLL_MS))
  }
}
