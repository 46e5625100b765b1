// Asks a test daemon's host agent directly (with the host secret), to see what QEMU itself reports.
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import type { Daemon } from './daemon.js'

export function agentCall<T>(daemon: Daemon, method: string, args: unknown): Promise<T> {
  const { agentSecret } = JSON.parse(readFileSync(join(daemon.dataDir, 'identity.json'), 'utf8')) as { agentSecret: string }
  const body = JSON.stringify(args)
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: join(daemon.dataDir, 'run', 'agent.sock'), path: `/call/${method}`, method: 'POST', headers: { 'x-flotilla-agent-secret': agentSecret, 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const parsed = JSON.parse(Buffer.concat(chunks).toString()) as { result?: T; error?: string }
        if (res.statusCode === 200) resolve(parsed.result as T)
        else reject(new Error(parsed.error))
      })
    })
    req.on('error', reject)
    req.end(body)
  })
}
