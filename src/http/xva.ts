// GET /export and PUT /import: XVA archives of VMs (reference/xapi.md §7.2–7.3, §8;
// xo-compat.md §2.6–2.7, §3). Here: authentication, the task, the VM lock, HTTP framing and
// XO's quirks (probe PUTs, 1 PiB lengths ended by a close). The records come from
// xapi/import.ts; the tar, compression and disk data from the agent (agent/xva-disks.ts).
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import { XapiError, asXapiError } from '../idl/errors.js'
import { getClass, NULL_REF, XAPI_USER_AGENT } from '../idl/index.js'
import type { CallContext, Services } from '../xapi/context.js'
import { exportPlan, importArchive } from '../xapi/import.js'
import { exportDone, isIsoSr } from '../xapi/storage.js'
import { srHost } from '../xapi/forwarding.js'
import { withVmOperation } from '../xapi/vm.js'
import { parseCompression } from '../xva/format.js'
import { adoptTask, answeredProbe, authenticated, bodyUntilClose, precheck, queryOf, refuse, relayToClient, streamingAnswer, throttledProgress } from './handler.js'
import { expectedLength } from './raw-vdi.js'
import type { HttpRoute } from './server.js'

const VM_REFS = { kind: 'set', of: { kind: 'ref', cls: 'VM' } } as const

function resolve(svc: Services, cls: string, ref: string | null, uuid: string | null): string {
  if (ref) {
    if (svc.db.tryRecord(cls, ref)) return ref
    throw new XapiError('HANDLE_INVALID', [cls, ref])
  }
  if (uuid) {
    try {
      return svc.db.refByUuid(getClass(cls), uuid)
    } catch {
      throw new XapiError('UUID_INVALID', [cls, uuid])
    }
  }
  throw new XapiError('HANDLE_INVALID', [cls, ''])
}

const truthy = (v: string | null) => v !== null && /^(true|1|yes|on)$/i.test(v)

async function exportXva(svc: Services, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') return refuse(req, res, new XapiError('NOT_IMPLEMENTED', [`${req.method} /export (use GET)`]))
  const session = await authenticated(svc, req, res)
  if (!session) return
  const query = queryOf(req)
  const vmRef = await precheck(svc, req, res, () => resolve(svc, 'VM', query.get('ref'), query.get('uuid')))
  if (!vmRef) return
  const compression = parseCompression(query.get('use_compression'))
  const preservePowerState = truthy(query.get('preserve_power_state'))
  const task = await adoptTask(svc, req, res, 'VM export')
  if (!task) return
  const ctx = { svc, sessionRef: session.ref, session: session.session, taskRef: task.ref, wireName: 'VM.export' } as CallContext
  try {
    await withVmOperation(ctx, vmRef, 'export', async () => {
      const plan = exportPlan(svc, vmRef, { preservePowerState })
      const source = await svc.agentFor(plan.host).stream('xva.export', { disks: plan.disks, compression }, Readable.from([plan.ovaXml]))
      const client = streamingAnswer(res, {
        'task-id': task.ref,
        server: XAPI_USER_AGENT,
        'content-type': 'application/octet-stream',
        'content-disposition': 'attachment; filename="export.xva"',
      })
      if (req.method === 'HEAD') {
        source.destroy()
        return void client.end()
      }
      const progress = throttledProgress(task)
      const total = Math.max(1, plan.totalSize)
      await relayToClient(source, client, (sent) => progress(Math.min(0.99, sent / total)))
    })
    await task.succeed(undefined, { kind: 'void' })
  } catch (err) {
    const e = asXapiError(err)
    await task.fail(e)
    refuse(req, res, e)
  }
  exportDone(svc)
}


function targetSr(svc: Services, query: URLSearchParams): string {
  const given = query.get('sr_id') ?? query.get('sr_uuid')
  if (given) return resolve(svc, 'SR', query.get('sr_id'), query.get('sr_id') ? null : query.get('sr_uuid'))
  const sr = svc.db.record('pool', svc.db.first('pool')).default_SR
  if (sr === NULL_REF || !svc.db.tryRecord('SR', sr)) throw new XapiError('DEFAULT_SR_NOT_FOUND', [sr])
  return sr
}

async function importXva(svc: Services, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'PUT' && req.method !== 'POST') return refuse(req, res, new XapiError('NOT_IMPLEMENTED', [`${req.method} /import (use PUT)`]))
  const session = await authenticated(svc, req, res)
  if (!session) return
  const query = queryOf(req)
  const checked = await precheck(svc, req, res, () => {
    if (req.headers['transfer-encoding'] !== undefined) throw new XapiError('IMPORT_ERROR_CANNOT_HANDLE_CHUNKED', [])
    const expected = expectedLength(req.headers['content-length'])
    const srRef = targetSr(svc, query)
    if (isIsoSr(svc, srRef)) throw new XapiError('SR_OPERATION_NOT_SUPPORTED', [srRef])
    srHost(svc, srRef) // an SR plugged nowhere is refused before the upload
    return { expected, srRef }
  })
  if (!checked) return
  const { expected, srRef } = checked
  if (answeredProbe(req, res, expected)) return
  const given = query.get('task_id')
  const task = await adoptTask(svc, req, res, 'VM import')
  if (!task) return
  // The answer goes out before the body is read when its length is known. XO's uploads of
  // unknown length (1 PiB) close the connection as soon as the answer arrives and the client
  // has handed its last bytes to the socket, dropping whatever its socket still queues: then
  // the answer waits for the archive's end-of-archive marker (or a failure). XO's probe (no
  // task_id, and the same 1 PiB length but no bytes) still gets its answer at once.
  const answer = () => {
    if (res.headersSent) return
    res.useChunkedEncodingByDefault = false
    res.writeHead(200, { 'task-id': task.ref, 'content-type': 'application/octet-stream', connection: 'close' })
    res.flushHeaders()
  }
  if (expected !== null || !given) answer()
  // …or until the upload has gone quiet while we were reading it: a decompressor (zstd reads its
  // input in blocks) may need the end of the input before it yields the marker, and a client
  // still sending only closes once it has handed over everything anyway.
  let lastData = Date.now()
  let received = 0
  const quiet = setInterval(() => {
    if (!res.headersSent && received > 0 && !req.isPaused() && Date.now() - lastData > 1000) answer()
  }, 200)
  const progress = throttledProgress(task)
  const { body, firstOrEnd, discard } = bodyUntilClose(req, (n) => ((received = n), (lastData = Date.now()), expected && progress((0.95 * n) / expected)))
  if ((await firstOrEnd) === 0) {
    clearInterval(quiet)
    answer()
    // Nothing came: with its own task, a probe with a 1 PiB length (no trace left).
    if (!given) await svc.db.transact((tx) => tx.exists('task', task.ref) && tx.delete('task', task.ref)).catch(() => undefined)
    else await task.fail(new XapiError('IMPORT_ERROR_PREMATURE_EOF', []))
    return void res.end()
  }
  try {
    const vms = await importArchive(svc, body, { srRef, restore: truthy(query.get('restore')), force: truthy(query.get('force')), taskRef: task.ref, onEndOfArchive: answer })
    await task.succeed(vms, VM_REFS)
    discard()
  } catch (err) {
    await task.fail(asXapiError(err))
    answer()
    body.destroy()
    req.destroy()
  }
  clearInterval(quiet)
  answer()
  res.end()
}

export const exportXvaRoute = (svc: Services): HttpRoute => ({ request: (req, res) => exportXva(svc, req, res) })
export const importXvaRoute = (svc: Services): HttpRoute => ({ request: (req, res) => importXva(svc, req, res) })
