// VM.import(url, sr, full_restore, force) (xapi_vm.ml's import): the host fetches an XVA from a
// URL itself and imports it as PUT /import would (xapi/import.ts's importArchive).
import { randomUUID } from 'node:crypto'
import { STATUS_CODES } from 'node:http'
import { Readable } from 'node:stream'
import type { ReadableStream as WebReadableStream } from 'node:stream/web'
import { XapiError } from '../idl/errors.js'
import { NULL_REF } from '../idl/index.js'
import { register } from './context.js'
import { importArchive } from './import.js'
import { isIsoSr } from './storage.js'
import { srHost } from './forwarding.js'

/** What xapi's Open_uri accepts of a URL here: http and https (xapi also opens file: Unix sockets, which a remote caller has no business naming). */
export function importUrl(text: string): URL {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new XapiError('INTERNAL_ERROR', [`Failed to parse URI: ${text}`])
  }
  const scheme = url.protocol.replace(/:$/, '')
  if (scheme !== 'http' && scheme !== 'https') throw new XapiError('INTERNAL_ERROR', [`Unsupported URI scheme: ${scheme}`])
  if (url.hostname === '') throw new XapiError('INTERNAL_ERROR', [`Failed to parse host and port from URI: ${text}`])
  return url
}

/**
 * The archive is read from exactly the URL given: a GET, and anything but 200 fails as xapi's
 * does (IMPORT_ERROR with the status line's code and reason). A redirect is not followed, since
 * the host would then fetch from an address the caller did not give. The task's cancellation
 * stops the download; a failed import leaves nothing behind.
 */
register('VM.import', async (ctx, [urlText, sr, fullRestore, force]) => {
  const url = importUrl(String(urlText))
  const srRef = String(sr)
  if (srRef === NULL_REF || !ctx.svc.db.tryRecord('SR', srRef)) throw new XapiError('HANDLE_INVALID', ['SR', srRef])
  if (isIsoSr(ctx.svc, srRef)) throw new XapiError('SR_OPERATION_NOT_SUPPORTED', [srRef])
  srHost(ctx.svc, srRef) // an SR plugged nowhere is refused before the download
  let res: Response
  try {
    res = await fetch(url, { redirect: 'manual', signal: ctx.signal })
  } catch (err) {
    if (ctx.signal?.aborted) throw new XapiError('TASK_CANCELLED', [ctx.taskRef ?? ''])
    const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message
    throw new XapiError('INTERNAL_ERROR', [`fetching ${url.origin}: ${cause}`])
  }
  if (res.status !== 200 || !res.body) {
    await res.body?.cancel().catch(() => undefined)
    throw new XapiError('IMPORT_ERROR', [`${res.status} ${STATUS_CODES[res.status] ?? res.statusText}`])
  }
  const body = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>)
  try {
    return await importArchive(ctx.svc, body, { srRef, restore: Boolean(fullRestore), force: Boolean(force), taskRef: ctx.taskRef ?? `OpaqueRef:${randomUUID()}` })
  } finally {
    body.destroy()
  }
})
