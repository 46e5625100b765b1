// How the API layer calls a host agent: HTTP over the agent's socket with the host's secret.
import { request, type OutgoingHttpHeaders } from 'node:http'
import { Duplex, Readable, type Writable } from 'node:stream'
import { XapiError } from '../idl/errors.js'
import type { HostFacts } from './facts.js'
import { SECRET_HEADER, type StreamHandlers, type StreamOut } from './server.js'

export class AgentError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message)
  }
}

interface AgentFailure {
  error?: string
  xapi?: string[]
}

const agentFailure = (f: AgentFailure, status: number) => (f.xapi ? XapiError.relayed(f.xapi[0]!, f.xapi.slice(1)) : new AgentError(f.error ?? `agent answered ${status}`, status))

/**
 * What a stream handler sends back: its bytes, and whether they all came (an IncomingMessage is
 * one). An in-process handler's output can also be `forward`ed: see LocalOutput.
 */
export type AgentStream = Readable & {
  readonly complete: boolean
  readonly headers: Readonly<Record<string, unknown>>
  forward?(target: Writable, onForwarded: (bytes: number) => void): void
}

/**
 * A handler's output in this process. The caller reads it as it would read the agent's HTTP
 * response, or calls `forward` before reading: the handler's writes then go straight into
 * `target` and call back once `target` has consumed them, so the handler may reuse a buffer as
 * soon as its write called back (writeOut). Once forwarded, it emits 'finish' when the handler
 * has ended and everything is in `target`. Read instead, it hands out copies, for the same reason.
 */
class LocalOutput extends Duplex implements StreamOut {
  complete = false
  status = 0
  headers: OutgoingHttpHeaders = {}
  private target?: Writable
  private onForwarded: (bytes: number) => void = () => undefined
  private reading = false
  /** A write held until the caller reads or forwards, or until the reader wants more. */
  private held?: () => void

  constructor() {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 })
  }

  writeHead(status: number, headers: OutgoingHttpHeaders = {}): this {
    this.status = status
    this.headers = headers
    this.emit('head')
    return this
  }

  forward(target: Writable, onForwarded: (bytes: number) => void): void {
    this.target = target
    this.onForwarded = onForwarded
    this.release()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.target) {
      this.onForwarded(chunk.length)
      this.target.write(chunk, (err) => callback(err))
    } else if (!this.reading) this.held = () => this._write(chunk, _encoding, callback)
    else if (this.push(Buffer.from(chunk))) callback()
    else this.held = callback
  }

  override _final(callback: () => void): void {
    this.complete = true
    if (!this.target) this.push(null)
    callback()
  }

  override _read(): void {
    this.reading = true
    this.release()
  }

  private release(): void {
    const held = this.held
    this.held = undefined
    held?.()
  }
}

/** Runs an in-process stream handler as the agent's server would: a failure before any output rejects, after it destroys the stream. */
function localStream(handler: StreamHandlers[string], args: unknown, body?: Readable): Promise<AgentStream> {
  const out = new LocalOutput()
  return new Promise((resolve, reject) => {
    out.once('head', () => resolve(out))
    handler(JSON.parse(JSON.stringify(args ?? null)), body ?? Readable.from([]), out).catch((err: Error & { code?: unknown; params?: unknown }) => {
      if (out.status) return void out.destroy(err)
      reject(typeof err.code === 'string' && Array.isArray(err.params) ? XapiError.relayed(err.code, err.params.map(String)) : new AgentError(err.message, 500))
    })
  })
}

export class AgentClient {
  constructor(
    private readonly socketPath: string,
    private readonly secret: string,
    /** The stream handlers of an agent running in this process. */
    private readonly local?: StreamHandlers,
  ) {}

  call<T>(method: string, args: unknown = null): Promise<T> {
    const body = JSON.stringify(args)
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          path: `/call/${method}`,
          method: 'POST',
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), [SECRET_HEADER]: this.secret },
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => {
            try {
              const parsed = JSON.parse(Buffer.concat(chunks).toString()) as { result?: T; error?: string; xapi?: string[] }
              if (res.statusCode === 200) resolve(parsed.result as T)
              else reject(agentFailure(parsed, res.statusCode ?? 0))
            } catch (err) {
              reject(err)
            }
          })
        },
      )
      req.on('error', reject)
      req.end(body)
    })
  }

  /**
   * A bulk transfer: `body` (if any) goes to the agent's stream handler, whose output comes back
   * as a stream. With the agent in this process (`local`), the bytes go straight from handler to
   * caller: a bulk stream always runs on the host holding the data (another host redirects the
   * client there), and an extra socket hop per byte costs a third of an export's throughput.
   */
  stream(name: string, args: unknown, body?: Readable): Promise<AgentStream> {
    const handler = this.local?.[name]
    if (handler) return localStream(handler, args, body)
    return new Promise((resolve, reject) => {
      const req = request(
        { socketPath: this.socketPath, path: `/stream/${name}?args=${encodeURIComponent(JSON.stringify(args))}`, method: 'POST', headers: { [SECRET_HEADER]: this.secret } },
        (res) => {
          if (res.statusCode === 200) return resolve(res)
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => {
            try {
              reject(agentFailure(JSON.parse(Buffer.concat(chunks).toString()) as AgentFailure, res.statusCode ?? 0))
            } catch (err) {
              reject(err)
            }
          })
        },
      )
      req.on('error', reject)
      if (body) body.pipe(req)
      else req.end()
    })
  }

  /** A raw byte stream to something on the agent's host (a console socket). */
  connect(name: string, args: unknown): Promise<Duplex> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socketPath, path: `/connect/${name}?args=${encodeURIComponent(JSON.stringify(args))}`, method: 'CONNECT', headers: { [SECRET_HEADER]: this.secret } })
      req.on('connect', (res, socket, head) => {
        if (res.statusCode !== 200) return void (socket.destroy(), reject(new AgentError(`agent refused ${name}`, res.statusCode ?? 0)))
        // Bytes that came with the 200 (a VNC greeting) belong to the stream.
        if (head.length > 0) socket.unshift(head)
        resolve(socket)
      })
      req.on('error', reject)
      req.end()
    })
  }

  hostFacts(): Promise<HostFacts> {
    return this.call('host.facts')
  }
}
