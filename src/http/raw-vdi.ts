// PUT /import_raw_vdi and GET /export_raw_vdi (reference/xapi.md §7.5, xo-compat.md §2.6–2.7):
// a VDI's content as raw bytes, a qcow2 file or a VHD (dynamic; differencing for base= exports). The bytes themselves are handled by the host
// agent (agent/vdi-transfer.ts); here: authentication, the task, HTTP framing and XO's quirks.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AgentStream } from '../agent/contract.js'
import { XapiError, asXapiError } from '../idl/errors.js'
import { getClass } from '../idl/index.js'
import type { VDIRecord } from '../idl/records.js'
import type { Services } from '../xapi/context.js'
import { disksHost, exportDone, srPath, vdiContentReplaced } from '../xapi/storage.js'
import { withSrLocks } from '../xapi/sr-locks.js'
import { markTaskForwarded } from '../xapi/task.js'
import { adoptTask, answeredProbe, authenticated, bodyUntilClose, HandlerTask, precheck, queryOf, refuse, relayToClient, throttledProgress } from './handler.js'
import type { HttpRoute } from './server.js'

/** What XO announces as Content-Length when it does not know the length: the body ends when it closes the connection. */
export const UNKNOWN_LENGTH = 1125899906842624

export type Format = 'raw' | 'qcow2' | 'vhd'

const CONTENT_TYPE: Record<Format, string> = { raw: 'application/octet-stream', qcow2: 'application/x-qemu-disk', vhd: 'application/vhd' }

/** The `format` query parameter: raw by default, qcow2, vhd; xapi's tar is refused clearly (pure). */
export function parseFormat(value: string | null, handler: string): Format {
  const format = value ?? 'raw'
  if (format === 'raw' || format === 'qcow2' || format === 'vhd') return format
  if (format === 'tar') throw new XapiError('NOT_IMPLEMENTED', [`${handler} format=${format} is not supported yet (supported: raw, qcow2, vhd)`])
  throw new XapiError('NOT_IMPLEMENTED', [`${handler}: unknown format ${JSON.stringify(format)} (supported: raw, qcow2, vhd)`])
}

/** The announced body length: null for XO's "unknown" 1 PiB (and a missing header with a body); 0 for none (pure). */
export function expectedLength(contentLength: string | undefined): number | null {
  if (contentLength === undefined) return 0
  const n = Number(contentLength)
  if (!Number.isSafeInteger(n) || n < 0) throw new XapiError('IMPORT_ERROR', [`bad Content-Length ${contentLength}`])
  return n >= UNKNOWN_LENGTH ? null : n
}

function resolveVdi(svc: Services, given: string | null): string {
  if (!given) throw new XapiError('HANDLE_INVALID', ['VDI', ''])
  if (svc.db.tryRecord('VDI', given)) return given
  try {
    return svc.db.refByUuid(getClass('VDI'), given)
  } catch {
    throw new XapiError('HANDLE_INVALID', ['VDI', given])
  }
}

/** Disks in use by a VM that is not halted, or the base of thin clones, must not be rewritten. */
function assertWritable(svc: Services, vdiRef: string): void {
  const vdi = svc.db.record('VDI', vdiRef)
  for (const vbd of vdi.VBDs) {
    const rec = svc.db.tryRecord('VBD', vbd)
    if (!rec) continue
    const vm = svc.db.tryRecord('VM', rec.VM)
    if (rec.currently_attached || (vm && vm.power_state !== 'Halted')) throw new XapiError('VDI_IN_USE', [vdiRef, 'import'])
  }
  // A snapshot's image is immutable: other images may build on it.
  if (vdi.is_a_snapshot) throw new XapiError('VDI_IN_USE', [vdiRef, 'import'])
}





/** Reads the agent's JSON answer. */
async function jsonOf<T>(res: AgentStream): Promise<T> {
  const chunks: Buffer[] = []
  for await (const c of res) chunks.push(c)
  return (JSON.parse(Buffer.concat(chunks).toString()) as { result: T }).result
}

/** Imports in progress, by VDI: a second one at the same time is refused. */
const importing = new Set<string>()

async function importRawVdi(svc: Services, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'PUT') return refuse(req, res, new XapiError('NOT_IMPLEMENTED', [`${req.method} /import_raw_vdi (use PUT)`]))
  const query = queryOf(req)
  if (!(await authenticated(svc, req, res))) return
  const checked = await precheck(svc, req, res, () => {
    const format = parseFormat(query.get('format'), '/import_raw_vdi')
    if (req.headers['transfer-encoding'] !== undefined) throw new XapiError('IMPORT_ERROR_CANNOT_HANDLE_CHUNKED', [])
    const expected = expectedLength(req.headers['content-length'])
    const vdiRef = resolveVdi(svc, query.get('vdi'))
    const vdi = svc.db.record('VDI', vdiRef)
    if (format === 'raw' && expected !== null && expected > Number(vdi.virtual_size)) throw new XapiError('VDI_TOO_SMALL', [vdiRef, String(expected)])
    assertWritable(svc, vdiRef)
    disksHost(svc, [vdiRef]) // a VDI whose SR is plugged nowhere is refused before the upload
    return { format, expected, vdiRef }
  })
  if (!checked) return
  const { format, expected, vdiRef } = checked
  if (answeredProbe(req, res, expected)) return
  const given = query.get('task_id')
  const task = await adoptTask(svc, req, res, `VDI import (${format})`)
  if (!task) return
  const vdi = svc.db.record('VDI', vdiRef)
  let mine = false
  try {
    // The answer goes out before the body is read; the connection closes when the import is done.
    res.useChunkedEncodingByDefault = false
    res.writeHead(200, { 'task-id': task.ref, 'content-type': 'text/plain', connection: 'close' })
    res.flushHeaders()
    const progress = throttledProgress(task)
    const total = expected ?? Number(vdi.virtual_size)
    const { body, firstOrEnd } = bodyUntilClose(req, (n) => progress(total > 0 ? (0.95 * n) / total : 0))
    if ((await firstOrEnd) === 0) {
      // Nothing came: with its own task this was a probe with a 1 PiB length (no trace left);
      // a client's task gets the result of an empty upload.
      if (!given) await svc.db.transact((tx) => tx.exists('task', task.ref) && tx.delete('task', task.ref)).catch(() => undefined)
      else if (format === 'raw') await task.succeed(undefined, { kind: 'void' })
      else await task.fail(new XapiError('VDI_IO_ERROR', [`empty upload: no ${format} image received`]))
      return void res.end()
    }
    try {
      // Only now is this more than a probe: one import per VDI at a time.
      if (importing.has(vdiRef)) throw new XapiError('VDI_IN_USE', [vdiRef, 'import'])
      importing.add(vdiRef)
      mine = true
      const host = disksHost(svc, [vdiRef])
      await markTaskForwarded(svc, task.ref, host)
      const args = { sr: srPath(svc, vdi.SR, host), location: vdi.location, format, expected }
      await withSrLocks([vdi.SR], async () => jsonOf(await svc.agentFor(host).stream('vdi.import', args, body)))
      await vdiContentReplaced(svc, vdiRef, format === 'qcow2' ? 'qcow2' : 'raw')
      await task.succeed(undefined, { kind: 'void' })
    } catch (err) {
      const e = asXapiError(err)
      await task.fail(e.code === 'VDI_IN_USE' || e.code === 'VDI_TOO_SMALL' ? new XapiError(e.code, [vdiRef, ...e.params.slice(1)]) : e)
      req.destroy()
    }
    res.end()
  } finally {
    if (mine) importing.delete(vdiRef)
  }
}

async function exportRawVdi(svc: Services, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') return refuse(req, res, new XapiError('NOT_IMPLEMENTED', [`${req.method} /export_raw_vdi (use GET)`]))
  const query = queryOf(req)
  if (!(await authenticated(svc, req, res))) return
  const checked = await precheck(svc, req, res, () => {
    const format = parseFormat(query.get('format'), '/export_raw_vdi')
    const vdiRef = resolveVdi(svc, query.get('vdi'))
    if (!query.get('base')) return { format, vdiRef }
    if (format !== 'vhd') throw new XapiError('NOT_IMPLEMENTED', [`/export_raw_vdi base= needs format=vhd (got ${format})`])
    const baseRef = resolveVdi(svc, query.get('base'))
    if (svc.db.record('VDI', baseRef).SR !== svc.db.record('VDI', vdiRef).SR) throw new XapiError('OPERATION_NOT_ALLOWED', [`base ${baseRef} is not in the SR of ${vdiRef}`])
    return { format, vdiRef, baseRef }
  })
  if (!checked) return
  const { format, vdiRef, baseRef } = checked
  const task = await adoptTask(svc, req, res, `VDI export (${format})`)
  if (!task) return
  const vdi = svc.db.record('VDI', vdiRef)
  await streamExport(svc, req, res, task, vdiRef, vdi, format, baseRef)
  exportDone(svc)
}

/** For a delta VHD: the base snapshot as the VHD's parent. */
function baseArg(svc: Services, baseRef: string | undefined): { location: string; uuid: string; name: string; timestamp?: number } | undefined {
  if (!baseRef) return undefined
  const base = svc.db.record('VDI', baseRef)
  const time = Date.parse(String(base.snapshot_time ?? ''))
  return { location: base.location, uuid: base.uuid, name: `${base.uuid}.vhd`, ...(Number.isFinite(time) && time > 0 ? { timestamp: time } : {}) }
}

async function streamExport(svc: Services, req: IncomingMessage, res: ServerResponse, task: HandlerTask, vdiRef: string, vdi: Readonly<VDIRecord>, format: Format, baseRef?: string): Promise<void> {
  let source: AgentStream
  try {
    // The chain is opened while no snapshot, clone or merge changes it; once open, what is read
    // stays as it was (the agent reads files it opened, or qemu-nbd holds them) and the SR is free.
    source = await withSrLocks([vdi.SR], async () => {
      const current = svc.db.record('VDI', vdiRef)
      const host = disksHost(svc, [vdiRef])
      await markTaskForwarded(svc, task.ref, host)
      const args = { sr: srPath(svc, current.SR, host), location: current.location, format, ...(format === 'vhd' ? { uuid: current.uuid, base: baseArg(svc, baseRef) } : {}) }
      return svc.agentFor(host).stream('vdi.export', args)
    })
  } catch (err) {
    let e = asXapiError(err)
    if (e.code === 'VDI_IN_USE') e = new XapiError('VDI_IN_USE', [vdiRef, 'export'])
    if (e.code === 'VDI_TOO_LARGE') e = new XapiError('VDI_TOO_LARGE', [vdiRef, ...e.params.slice(1)])
    await task.fail(e)
    return refuse(req, res, e)
  }
  const length = Number(source.headers['content-length'])
  res.writeHead(200, {
    'task-id': task.ref,
    'content-type': CONTENT_TYPE[format],
    'content-disposition': `attachment; filename="${vdi.uuid}.${format}"`,
    ...(Number.isSafeInteger(length) ? { 'content-length': length } : {}),
    connection: 'close',
  })
  if (req.method === 'HEAD') {
    source.destroy()
    await task.succeed(undefined, { kind: 'void' })
    return void res.end()
  }
  const progress = throttledProgress(task)
  const known = Number.isSafeInteger(length) && length > 0
  try {
    await relayToClient(source, res, (sent) => (known ? progress(sent / length) : undefined), known ? length : undefined)
    await task.succeed(undefined, { kind: 'void' })
  } catch (err) {
    await task.fail(asXapiError(err))
  }
}

export const importRawVdiRoute = (svc: Services): HttpRoute => ({ request: (req, res) => importRawVdi(svc, req, res) })
export const exportRawVdiRoute = (svc: Services): HttpRoute => ({ request: (req, res) => exportRawVdi(svc, req, res) })
