// Disk operations on a running VM over QMP: live snapshots (the guest goes on writing to a new
// overlay) and streaming a backing image into the image the guest uses.
import { diskDeviceId } from './argv.js'
import type { QmpClient } from './qmp.js'

interface BlockInfo {
  qdev?: string
  inserted?: { 'node-name'?: string; file?: string }
}

/** The node a disk device currently writes to (it changes with every live snapshot). */
export async function topNode(qmp: QmpClient, node: string): Promise<string> {
  const id = diskDeviceId({ node })
  const blocks = await qmp.execute<BlockInfo[]>('query-block')
  const block = blocks.find((b) => b.qdev?.replace(/^\/machine\/peripheral\//, '').replace(/\/.*$/, '') === id)
  const top = block?.inserted?.['node-name']
  if (!top) throw new Error(`no disk ${id} in this VM`)
  return top
}

let counter = 0
const freshNodeName = (node: string) => `${node}s${Date.now().toString(36)}${(counter++).toString(36)}`

/** Freezes the disk's current image: from now on the guest writes to a new overlay at `overlayPath`. Crash-consistent. */
export async function liveSnapshot(qmp: QmpClient, node: string, overlayPath: string): Promise<void> {
  await qmp.execute('blockdev-snapshot-sync', { 'node-name': await topNode(qmp, node), 'snapshot-file': overlayPath, 'snapshot-node-name': freshNodeName(node), format: 'qcow2' })
}

interface NamedNode {
  'node-name': string
  file: string
  drv: string
}

/**
 * Copies into the disk's current image the data of its backing chain down to (not including)
 * `basePath`, then makes it build on `basePath` (or on nothing). QEMU rewrites the image
 * header only at the end, and keeps running the job if our daemon goes away.
 */
export async function streamInto(qmp: QmpClient, node: string, basePath: string | undefined, timeoutMs = 30 * 60_000): Promise<void> {
  const top = await topNode(qmp, node)
  const nodes = await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true })
  const base = basePath ? nodes.find((n) => n.drv === 'qcow2' && n.file === basePath)?.['node-name'] : undefined
  if (basePath && !base) throw new Error(`${basePath} is not in the disk's backing chain`)
  const jobId = `stream-${freshNodeName(node)}`
  const done = qmp.waitForEvent('BLOCK_JOB_COMPLETED', (e) => e.data.device === jobId, timeoutMs)
  await qmp.execute('block-stream', { 'job-id': jobId, device: top, ...(base ? { 'base-node': base } : {}) })
  const event = await done
  if (event.data.error) throw new Error(`streaming into ${node} failed: ${String(event.data.error)}`)
}

/** Grows a running disk (the guest sees the new size at once). */
export async function resizeLive(qmp: QmpClient, node: string, size: number): Promise<void> {
  await qmp.execute('block_resize', { 'node-name': await topNode(qmp, node), size })
}
