// xe's file transfers: disk and VM images stream between a local file and the host's HTTP
// handlers, with the transfer's task for progress and errors.
import { createReadStream, createWriteStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { pipeline } from 'node:stream/promises'
import { Transform } from 'node:stream'
import { CliError, type Connection, type Invocation } from './xe.js'

/** A byte counter that reports progress on a terminal. */
function meter(total: number | undefined): Transform {
  let done = 0
  let last = 0
  const tty = process.stderr.isTTY
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length
      if (tty && Date.now() - last > 250) {
        last = Date.now()
        process.stderr.write(`\r${(done / 2 ** 20).toFixed(0)} MiB${total ? ` of ${(total / 2 ** 20).toFixed(0)} MiB (${Math.floor((100 * done) / total)}%)` : ''}   `)
      }
      cb(null, chunk)
    },
    flush(cb) {
      if (tty) process.stderr.write('\r\x1b[K')
      cb()
    },
  })
}

function url(inv: Invocation, path: string, query: Record<string, string>): { path: string; send: typeof httpsRequest } {
  return { path: `${path}?${new URLSearchParams(query).toString()}`, send: inv.ssl ? httpsRequest : (httpRequest as typeof httpsRequest) }
}

/** Waits for the transfer's task and returns its result (an XML-RPC value), or fails with its error. */
async function taskOutcome(conn: Connection, task: string): Promise<string> {
  for (;;) {
    const rec = await conn.call<{ status: string; result: string; error_info: string[] }>('task.get_record', task)
    if (rec.status === 'success') return rec.result
    if (rec.status !== 'pending') throw new CliError(`The server failed to handle your request (${rec.error_info.join(', ')})`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

export async function download(conn: Connection, inv: Invocation, path: string, query: Record<string, string>, filename: string): Promise<void> {
  const task = await conn.call<string>('task.create', `xe download ${path}`, '')
  const { path: full, send } = url(inv, path, { ...query, session_id: conn.sessionRef, task_id: task })
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = send({ host: inv.server, port: inv.port, path: full, rejectUnauthorized: false }, resolve)
    req.on('error', reject)
    req.end()
  })
  if (res.statusCode !== 200) {
    res.resume()
    await taskOutcome(conn, task)
    throw new CliError(`The server refused the download: HTTP ${res.statusCode}`)
  }
  const length = Number(res.headers['content-length'])
  // Large buffers: the file is written in big pieces, and the download keeps flowing meanwhile.
  await pipeline(res, meter(Number.isFinite(length) ? length : undefined), createWriteStream(filename, { highWaterMark: 8 << 20 }))
  await taskOutcome(conn, task)
  await conn.call('task.destroy', task).catch(() => undefined)
}

/** Uploads a file; returns the task's result. */
export async function upload(conn: Connection, inv: Invocation, path: string, query: Record<string, string>, filename: string): Promise<string> {
  const { size } = await stat(filename).catch(() => {
    throw new CliError(`Cannot read ${filename}`)
  })
  const task = await conn.call<string>('task.create', `xe upload ${path}`, '')
  const { path: full, send } = url(inv, path, { ...query, session_id: conn.sessionRef, task_id: task })
  await new Promise<void>((resolve, reject) => {
    const req = send({ host: inv.server, port: inv.port, path: full, method: 'PUT', rejectUnauthorized: false, headers: { 'content-length': size } }, (res) => {
      res.resume()
      res.on('end', resolve)
    })
    req.on('error', reject)
    pipeline(createReadStream(filename, { highWaterMark: 1 << 20 }), meter(size), req).catch(reject)
  })
  const result = await taskOutcome(conn, task)
  await conn.call('task.destroy', task).catch(() => undefined)
  return result
}
