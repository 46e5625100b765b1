// Block mirrors in a running QEMU (reference/qemu-lab.md §6–§7): a disk moved live to another
// image (VDI.pool_migrate: the mirror pivots the device onto its copy), and a VM's disks copied
// to a migration destination's NBD exports while it runs (storage motion: the mirrors are ended
// without a pivot once the memory is across). Every wait for a mirror has a progress watchdog,
// as a copy to a silent NBD peer never ends by itself (pool-lab §4).
import { setTimeout as sleep } from 'node:timers/promises'
import { addBlockNodes, removeBlockNodes } from './block-nodes.js'
import { topNode } from './blockjobs.js'
import type { QemuDisk } from './config.js'
import type { QmpClient, QmpEvent } from './qmp.js'
import type { Progress } from './migration.js'
import { freePort } from '../lib/ports.js'
import { withUndo } from '../lib/undo.js'

/** What query-block-jobs says of one job, the parts we use. */
export interface BlockJobInfo {
  device: string
  len: number
  offset: number
  ready: boolean
}

export class MirrorError extends Error {
  constructor(message: string, readonly stalled = false) {
    super(message)
    this.name = 'MirrorError'
  }
}

/**
 * The watchdog's decision for one look at a mirror at time `now`: in sync (ready), ended with an
 * error (`ended`, from its BLOCK_JOB_COMPLETED event, or gone without one), stalled (nothing
 * copied for `stallMs`) or still copying, with the progress to keep.
 */
export function mirrorStep(job: BlockJobInfo | undefined, ended: string | undefined, progress: Progress, now: number, stallMs: number):
  | { state: 'ready' }
  | { state: 'failed'; reason: string }
  | { state: 'stalled' }
  | { state: 'going'; progress: Progress } {
  if (ended !== undefined || !job) return { state: 'failed', reason: ended ?? 'the copy job ended before it was in sync' }
  if (job.ready) return { state: 'ready' }
  if (job.offset > progress.transferred) return { state: 'going', progress: { transferred: job.offset, since: now } }
  if (now - progress.since >= stallMs) return { state: 'stalled' }
  return { state: 'going', progress }
}

const POLL_MS = 50

let counter = 0
/** A node name unique in this QEMU, under QEMU's 31-character limit. */
const freshName = (node: string, kind: string) => `${node}${kind}${Date.now().toString(36)}${(counter++).toString(36)}`

export interface MirrorOptions {
  stallMs: number
  signal?: AbortSignal
}

/** Waits until mirror `jobId` is in sync; on failure, stall or abort it is cancelled (the source keeps every write). */
async function mirrorUntilReady(qmp: QmpClient, jobId: string, opts: MirrorOptions): Promise<void> {
  let ended: string | undefined
  const onEvent = (e: QmpEvent) => {
    if ((e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED') && e.data.device === jobId) ended = String(e.data.error ?? 'the copy job ended before it was in sync')
  }
  qmp.on('event', onEvent)
  try {
    let progress: Progress = { transferred: 0, since: Date.now() }
    for (;;) {
      const jobs = await qmp.execute<BlockJobInfo[]>('query-block-jobs')
      const step = mirrorStep(jobs.find((j) => j.device === jobId), ended, progress, Date.now(), opts.stallMs)
      if (step.state === 'ready') return
      if (step.state === 'failed') throw new MirrorError(`the disk copy failed: ${step.reason}`)
      if (step.state === 'stalled') throw new MirrorError(`the disk copy stalled: nothing copied for ${opts.stallMs / 1000} s`, true)
      if (opts.signal?.aborted) throw new MirrorError('the disk copy was cancelled')
      progress = step.progress
      await sleep(POLL_MS)
    }
  } finally {
    qmp.off('event', onEvent)
  }
}

/** Ends a mirror at once, whatever its state, and waits until it is gone (its target then takes no more writes). */
async function cancelMirror(qmp: QmpClient, jobId: string): Promise<void> {
  const jobs = await qmp.execute<BlockJobInfo[]>('query-block-jobs')
  if (!jobs.some((j) => j.device === jobId)) return
  const gone = qmp.waitForEvent('BLOCK_JOB_CANCELLED', (e) => e.data.device === jobId, 30_000).catch(() => undefined)
  await qmp.execute('block-job-cancel', { device: jobId, force: true }).catch(() => undefined)
  await gone
}

interface NamedNode {
  'node-name': string
}

/**
 * After a pivot: the nodes the disk used before (the command line's, earlier moves', with their
 * file nodes) are deleted, which closes their images; snapshot overlays QEMU made itself went
 * with the pivot.
 */
async function releaseOldNodes(qmp: QmpClient, node: string, current: string): Promise<void> {
  const own = new RegExp(`^${node}(m[0-9a-z]+)?$`)
  const names = (await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true })).map((n) => n['node-name'])
  for (const name of new Set(names.filter((n) => own.test(n) && n !== current))) await removeBlockNodes(qmp, name)
}

/**
 * Moves a running disk to the image at `target` (made beforehand, of the same size): mirrored
 * while the guest writes on, then the device switched onto it and the old image closed. If
 * anything fails before the switch, the disk stays where it was and the target is let go.
 */
export async function moveDisk(qmp: QmpClient, node: string, target: { path: string; format: QemuDisk['format'] }, opts: MirrorOptions): Promise<void> {
  const top = await topNode(qmp, node)
  const name = freshName(node, 'm')
  const jobId = `move-${name}`
  await withUndo(`move of disk ${node}`, async (undo) => {
    await addBlockNodes(qmp, undo, name, target.path, target.format, false)
    undo.push(`the mirror ${jobId}`, () => cancelMirror(qmp, jobId))
    await qmp.execute('blockdev-mirror', { 'job-id': jobId, device: top, target: name, sync: 'full' })
    await mirrorUntilReady(qmp, jobId, opts)
    const done = qmp.waitForEvent('BLOCK_JOB_COMPLETED', (e) => e.data.device === jobId, 60_000)
    await qmp.execute('job-complete', { id: jobId })
    const event = await done
    if (event.data.error) throw new MirrorError(`the switch onto the disk's copy failed: ${String(event.data.error)}`)
  })
  await releaseOldNodes(qmp, node, name)
}

/** QEMU's inet socket address (an IPv6 address without brackets). */
const inet = (host: string, port: number) => ({ host, port: String(port) })

/**
 * On a migration destination started with -incoming defer, before migrate-incoming: serves the
 * disks `nodes` (freshly made, empty images) to the source's mirrors over NBD on `address`;
 * returns the port. The disks are activated only once the memory is in (late-block-activate).
 */
export async function exportDisks(qmp: QmpClient, address: string, nodes: string[]): Promise<number> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'late-block-activate', state: true }] })
  const port = await freePort(address)
  await qmp.execute('nbd-server-start', { addr: { type: 'inet', data: inet(address, port) } })
  for (const node of nodes) await qmp.execute('block-export-add', { type: 'nbd', id: `x-${node}`, 'node-name': node, writable: true, name: node })
  return port
}

/** On a destination once the source's mirrors are done: the NBD exports go (before the vCPUs run). */
export async function stopExports(qmp: QmpClient): Promise<void> {
  await qmp.execute('nbd-server-stop').catch(() => undefined)
}

const nbdNode = (node: string) => `${node}n`
const motionJob = (node: string) => `motion-${node}`

/**
 * On the source: mirrors each disk in `nodes` to the destination's export of the same name at
 * address:port, and resolves once all are in sync (they stay in sync, each guest write going to
 * both, until finishMirrors or abortMirrors). On failure, stall or abort every mirror is ended.
 */
export async function mirrorToExports(qmp: QmpClient, address: string, port: number, nodes: string[], opts: MirrorOptions): Promise<void> {
  try {
    for (const node of nodes) {
      const top = await topNode(qmp, node)
      await qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': nbdNode(node), server: { type: 'inet', ...inet(address, port) }, export: node })
      await qmp.execute('blockdev-mirror', { 'job-id': motionJob(node), device: top, target: nbdNode(node), sync: 'full' })
    }
    await Promise.all(nodes.map((node) => mirrorUntilReady(qmp, motionJob(node), opts)))
  } catch (err) {
    await abortMirrors(qmp, nodes)
    throw err
  }
}

/**
 * On the source once the memory is across (its vCPUs stopped): each mirror finishes its last
 * writes and ends without switching the source's disks (block-job-cancel of a job in sync).
 */
export async function finishMirrors(qmp: QmpClient, nodes: string[], timeoutMs: number): Promise<void> {
  for (const node of nodes) {
    const job = motionJob(node)
    const done = qmp.waitForEvent('BLOCK_JOB_COMPLETED', (e) => e.data.device === job, timeoutMs)
    await qmp.execute('block-job-cancel', { device: job })
    const event = await done
    if (event.data.error) throw new MirrorError(`the last of disk ${node} did not reach the destination: ${String(event.data.error)}`)
  }
  for (const node of nodes) await qmp.execute('blockdev-del', { 'node-name': nbdNode(node) }).catch(() => undefined)
}

/** On the source after a failed storage motion: the mirrors end at once and their NBD links close; the source's disks are as they were. */
export async function abortMirrors(qmp: QmpClient, nodes: string[]): Promise<void> {
  for (const node of nodes) {
    await cancelMirror(qmp, motionJob(node)).catch(() => undefined)
    await qmp.execute('blockdev-del', { 'node-name': nbdNode(node) }).catch(() => undefined)
  }
}
