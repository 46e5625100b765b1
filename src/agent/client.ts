// How the API layer calls a host agent: HTTP over the agent's socket with the host's secret.
import { request, type IncomingMessage } from 'node:http'
import type { Duplex, Readable } from 'node:stream'
import { XapiError } from '../idl/errors.js'
import type { HostFacts } from './facts.js'
import { SECRET_HEADER } from './server.js'

export class AgentError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message)
  }
}

export class AgentClient {
  constructor(
    private readonly socketPath: string,
    private readonly secret: string,
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
              else if (parsed.xapi) reject(new XapiError(parsed.xapi[0]!, parsed.xapi.slice(1)))
              else reject(new AgentError(parsed.error ?? `agent answered ${res.statusCode}`, res.statusCode ?? 0))
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

  /** A bulk transfer: `body` (if any) goes to the agent's stream handler, whose response comes back as a stream. */
  stream(name: string, args: unknown, body?: Readable, headers: Record<string, string | number> = {}): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = request(
        { socketPath: this.socketPath, path: `/stream/${name}?args=${encodeURIComponent(JSON.stringify(args))}`, method: 'POST', headers: { ...headers, [SECRET_HEADER]: this.secret } },
        (res) => {
          if (res.statusCode === 200) return resolve(res)
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => {
            try {
              const parsed = JSON.parse(Buffer.concat(chunks).toString()) as { error?: string; xapi?: string[] }
              reject(parsed.xapi ? new XapiError(parsed.xapi[0]!, parsed.xapi.slice(1)) : new AgentError(parsed.error ?? `agent answered ${res.statusCode}`, res.statusCode ?? 0))
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
