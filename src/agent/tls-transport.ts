// The agent transport to another host of the pool: the same requests as socket-transport.ts
// (POST /call/<method>, POST /stream/<name>?args=, CONNECT /connect/<name>?args=), over HTTPS with
// mutual TLS. This host's certificate from the pool CA authenticates it, so no secret travels;
// the server side is startAgentTlsServer (server.ts). A request that cannot reach the agent
// fails with AgentUnreachable (CANNOT_CONTACT_HOST [host]).
import { Agent, request, type RequestOptions } from 'node:https'
import type { ClientRequest, IncomingMessage } from 'node:http'
import type { Readable } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import type { AgentTransport } from './client.js'
import { AgentUnreachable } from './failure.js'

/** PEM texts: the pool CA, and this host's certificate and key signed by it. */
export interface AgentTls {
  ca: string
  cert: string
  key: string
}

export interface TlsPeer {
  /** The agent's address, `https://<address>:<port>`. */
  url: string
  /** The host the agent runs on, as CANNOT_CONTACT_HOST names it. */
  hostRef: string
  tls: AgentTls
  /** How long a new connection may take up to the end of its TLS handshake; 5 s unless given. */
  connectTimeoutMs?: number
}

export interface TlsAgentTransport extends AgentTransport {
  /** Closes the kept-alive connections (the peer left the pool, or this host's trust changed). */
  close(): void
}

const argsQuery = (args: unknown) => `args=${encodeURIComponent(JSON.stringify(args))}`

export function tlsTransport(peer: TlsPeer): TlsAgentTransport {
  const url = new URL(peer.url)
  const connectTimeoutMs = peer.connectTimeoutMs ?? 5000
  const agent = new Agent({
    keepAlive: true,
    ca: peer.tls.ca,
    cert: peer.tls.cert,
    key: peer.tls.key,
    // The chain is checked against the pool CA (rejectUnauthorized), and the CA is the pool's
    // own: it signs pool hosts only, each as trusted as any other to serve its agent. The name is
    // not checked because hosts are addressed by the IP the pool DB publishes, which a DHCP
    // lease can change before the host reissues its certificate.
    rejectUnauthorized: true,
    checkServerIdentity: () => undefined,
  })
  const options = (path: string, method: string): RequestOptions => ({ agent, host: url.hostname, port: url.port, path, method })
  const unreachable = (err: Error) => new AgentUnreachable(peer.hostRef, err)

  /**
   * Fails `req` if a new connection has not finished its TLS handshake in time. Only the
   * connection is timed: an answer may take as long as its work (a VM start).
   */
  const timeConnect = (req: ClientRequest) => {
    req.once('socket', (socket: TLSSocket) => {
      if (req.reusedSocket) return
      const timer = setTimeout(() => req.destroy(new Error(`no TLS connection to ${peer.url} within ${connectTimeoutMs} ms`)), connectTimeoutMs)
      const done = () => clearTimeout(timer)
      socket.once('secureConnect', done)
      socket.once('close', done)
    })
    return req
  }

  return {
    call: (method, args) => {
      const body = JSON.stringify(args)
      return new Promise((resolve, reject) => {
        const req = request({ ...options(`/call/${method}`, 'POST'), headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res: IncomingMessage) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('error', (err) => reject(unreachable(err)))
          res.on('end', () => {
            try {
              resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) as unknown })
            } catch (err) {
              reject(err)
            }
          })
        })
        timeConnect(req).on('error', (err) => reject(unreachable(err)))
        req.end(body)
      })
    },

    stream: (name, args, body?: Readable) =>
      new Promise((resolve, reject) => {
        const req = request(options(`/stream/${name}?${argsQuery(args)}`, 'POST'), (res) => resolve({ status: res.statusCode ?? 0, answer: res }))
        timeConnect(req).on('error', (err) => reject(unreachable(err)))
        if (body) body.pipe(req)
        else req.end()
      }),

    connect: (name, args) =>
      new Promise((resolve, reject) => {
        const req = request(options(`/connect/${name}?${argsQuery(args)}`, 'CONNECT'))
        req.on('connect', (res, socket, head) => {
          // Bytes that came with the 200 (a VNC greeting) belong to the stream.
          if (res.statusCode === 200 && head.length > 0) socket.unshift(head)
          resolve({ status: res.statusCode ?? 0, socket })
        })
        timeConnect(req).on('error', (err) => reject(unreachable(err)))
        req.end()
      }),

    close: () => agent.destroy(),
  }
}
