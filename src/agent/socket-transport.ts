// The agent transport of one host: HTTP on the agent's Unix socket, each request carrying the
// host's secret (the server side is server.ts). Calls are POST /call/<method> with a JSON body;
// streams POST /stream/<name>; connects CONNECT /connect/<name>; stream and connect arguments
// travel as JSON in the `args` query parameter.
import { request } from 'node:http'
import type { Readable } from 'node:stream'
import type { AgentTransport } from './client.js'

export const SECRET_HEADER = 'x-flotilla-agent-secret'

const argsQuery = (args: unknown) => `args=${encodeURIComponent(JSON.stringify(args))}`

export function socketTransport(socketPath: string, secret: string): AgentTransport {
  return {
    call: (method, args) => {
      const body = JSON.stringify(args)
      return new Promise((resolve, reject) => {
        const req = request(
          {
            socketPath,
            path: `/call/${method}`,
            method: 'POST',
            headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), [SECRET_HEADER]: secret },
          },
          (res) => {
            const chunks: Buffer[] = []
            res.on('data', (c: Buffer) => chunks.push(c))
            res.on('end', () => {
              try {
                resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) as unknown })
              } catch (err) {
                reject(err)
              }
            })
          },
        )
        req.on('error', reject)
        req.end(body)
      })
    },

    stream: (name, args, body?: Readable) =>
      new Promise((resolve, reject) => {
        const req = request({ socketPath, path: `/stream/${name}?${argsQuery(args)}`, method: 'POST', headers: { [SECRET_HEADER]: secret } }, (res) =>
          resolve({ status: res.statusCode ?? 0, answer: res }),
        )
        req.on('error', reject)
        if (body) body.pipe(req)
        else req.end()
      }),

    connect: (name, args) =>
      new Promise((resolve, reject) => {
        const req = request({ socketPath, path: `/connect/${name}?${argsQuery(args)}`, method: 'CONNECT', headers: { [SECRET_HEADER]: secret } })
        req.on('connect', (res, socket, head) => {
          // Bytes that came with the 200 (a VNC greeting) belong to the stream.
          if (res.statusCode === 200 && head.length > 0) socket.unshift(head)
          resolve({ status: res.statusCode ?? 0, socket })
        })
        req.on('error', reject)
        req.end()
      }),
  }
}
