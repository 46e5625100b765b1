// The host agent's own endpoint: JSON calls over a Unix socket, each carrying the per-host
// secret. The API layer reaches host-local work only through here, even on the same host.
import { createServer, type Server } from 'node:http'
import { timingSafeEqual } from 'node:crypto'
import { unlink } from 'node:fs/promises'
import { readHostFacts } from './facts.js'

export const SECRET_HEADER = 'x-flotilla-agent-secret'

export type AgentMethods = Record<string, (args: unknown) => Promise<unknown>>

export function agentMethods(): AgentMethods {
  return {
    'host.facts': () => readHostFacts(),
  }
}

function secretMatches(given: string | undefined, secret: string): boolean {
  if (given === undefined) return false
  const a = Buffer.from(given)
  const b = Buffer.from(secret)
  return a.length === b.length && timingSafeEqual(a, b)
}

export async function startAgentServer(socketPath: string, secret: string, methods: AgentMethods = agentMethods()): Promise<Server> {
  await unlink(socketPath).catch(() => undefined)
  const server = createServer((req, res) => {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    if (!secretMatches(req.headers[SECRET_HEADER] as string | undefined, secret)) return reply(403, { error: 'agent secret missing or wrong' })
    const method = methods[(req.url ?? '').replace(/^\/call\//, '')]
    if (req.method !== 'POST' || !method) return reply(404, { error: `no such agent call: ${req.url}` })
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      let args: unknown
      try {
        args = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : null
      } catch {
        return reply(400, { error: 'malformed JSON' })
      }
      method(args).then(
        (result) => reply(200, { result }),
        (err: Error) => reply(500, { error: err.message }),
      )
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(socketPath, () => resolve())
  })
  return server
}
