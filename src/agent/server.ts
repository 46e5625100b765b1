// The host agent's own endpoint: JSON calls over a Unix socket, each carrying the per-host
// secret. The API layer reaches host-local work only through here, even on the same host (bulk
// streams of an agent in the same process skip the socket: see AgentClient.stream).
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server } from 'node:http'
import type { Duplex, Readable, Writable } from 'node:stream'
import { timingSafeEqual } from 'node:crypto'
import { unlink } from 'node:fs/promises'
import { readHostFacts } from './facts.js'
import { storageMethods, type LiveDisk } from './storage.js'
import { FileSr } from '../storage/file-sr.js'
import { bridgeName } from '../net/bridge.js'
import type { StartRequest, VmRuntime } from './vms.js'
import type { VmSpec } from './hardware.js'
import { installServerCertificate, serverCertificate, type ServerTls } from './certificate.js'

export const SECRET_HEADER = 'x-flotilla-agent-secret'

// Each method takes one JSON argument; errors with a XenAPI code and params keep them.
export type AgentMethods = Record<string, (args: any) => Promise<unknown>>


export function agentMethods(vms: VmRuntime, tls?: ServerTls): AgentMethods {
  const noTls = () => Promise.reject(new Error('this agent serves no TLS certificate'))
  return {
    'host.facts': () => readHostFacts(),
    'host.server-certificate': () => (tls ? serverCertificate(tls) : noTls()),
    'host.install-server-certificate': (args: { key: string; cert: string; chain: string[] }) => (tls ? installServerCertificate(tls, args) : noTls()),
    ...storageMethods(vms),
    'vm.start': (request: StartRequest) => vms.start(request),
    'vm.resume': ({ request, statePath }: { request: StartRequest; statePath: string }) => vms.start(request, statePath),
    'vm.suspend': ({ uuid, statePath }: { uuid: string; statePath: string }) => vms.suspend(uuid, statePath),
    'vm.stop': ({ uuid, clean, timeoutMs }: { uuid: string; clean: boolean; timeoutMs?: number }) => vms.stop(uuid, clean, timeoutMs),
    'vm.reset': ({ uuid }: { uuid: string }) => vms.reset(uuid),
    'vm.devices': ({ uuid }: { uuid: string }) => vms.devices(uuid),
    'vm.resize-disk': ({ uuid, userdevice, size }: LiveDisk & { size: number }) => vms.resizeDisk(uuid, userdevice, size),
    'vm.plug-disk': ({ uuid, platform, disk }: { uuid: string; platform: Record<string, string>; disk: VmSpec['disks'][number] }) => vms.plugDisk(uuid, platform, disk),
    'vm.unplug-disk': ({ uuid, userdevice }: { uuid: string; userdevice: number }) => vms.unplugDisk(uuid, userdevice),
    'vm.insert-cd': ({ uuid, userdevice, path, format }: { uuid: string; userdevice: number; path: string; format: 'qcow2' | 'raw' }) => vms.insertCd(uuid, userdevice, path, format),
    'vm.eject-cd': ({ uuid, userdevice }: { uuid: string; userdevice: number }) => vms.ejectCd(uuid, userdevice),
    'vm.plug-nic': ({ uuid, platform, nic }: { uuid: string; platform: Record<string, string>; nic: StartRequest['nics'][number] }) => vms.plugNic(uuid, platform, nic),
    'vm.move-nic': ({ uuid, device, network }: { uuid: string; device: string; network: string }) => vms.moveNic(uuid, device, network),
    'vm.unplug-nic': ({ uuid, device }: { uuid: string; device: string }) => vms.unplugNic(uuid, device),
    'vm.pause': ({ uuid }: { uuid: string }) => vms.pause(uuid),
    'vm.unpause': ({ uuid }: { uuid: string }) => vms.unpause(uuid),
    'vm.set-vcpus': ({ uuid, count }: { uuid: string; count: number }) => vms.setVcpus(uuid, count),
    'vm.reattach': ({ vms: list }: { vms: { uuid: string; devices: string[] }[] }) => vms.reattach(list),
    'vm.checkpoint': async ({ uuid, path, disks, state }: { uuid: string; path: string; disks: { userdevice: number; next: string }[]; state: string }) => {
      const sr = new FileSr(path)
      await vms.checkpoint(uuid, disks.map((d) => ({ userdevice: d.userdevice, overlay: sr.path(d.next) })), state)
    },
    'net.ensure': async ({ network }: { network: string }) => {
      const name = bridgeName(vms.hostUuid, network)
      await vms.network.ensureBridge(name)
      return name
    },
    'net.remove': ({ network }: { network: string }) => vms.network.deleteLink(bridgeName(vms.hostUuid, network)),
  }
}

function secretMatches(given: string | undefined, secret: string): boolean {
  if (given === undefined) return false
  const a = Buffer.from(given)
  const b = Buffer.from(secret)
  return a.length === b.length && timingSafeEqual(a, b)
}

/**
 * Bulk data and byte streams, for what JSON calls cannot carry: `stream` handlers get the
 * request (body = data in) and response (data out); `connect` handlers get a raw socket
 * (consoles). Both receive their JSON arguments from the `args` query parameter.
 */
/** Where a stream handler writes its output: an HTTP response, or the caller's stream in this process. */
export type StreamOut = Writable & { writeHead(status: number, headers?: OutgoingHttpHeaders): unknown }

export type StreamHandlers = Record<string, (args: any, body: Readable, out: StreamOut) => Promise<void>>

export interface AgentStreams {
  stream?: StreamHandlers
  connect?: Record<string, (args: any, socket: Duplex) => Promise<void>>
}

function argsOf(url: string | undefined): unknown {
  const text = new URL(url ?? '/', 'http://agent').searchParams.get('args')
  return text ? JSON.parse(text) : null
}

export async function startAgentServer(socketPath: string, secret: string, methods: AgentMethods, streams: AgentStreams = {}): Promise<Server> {
  await unlink(socketPath).catch(() => undefined)
  const server = createServer((req, res) => {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    if (!secretMatches(req.headers[SECRET_HEADER] as string | undefined, secret)) return reply(403, { error: 'agent secret missing or wrong' })
    const streamName = /^\/stream\/([^?]+)/.exec(req.url ?? '')?.[1]
    if (streamName !== undefined) {
      const handler = streams.stream?.[streamName]
      if (!handler) return reply(404, { error: `no such agent stream: ${streamName}` })
      return void handler(argsOf(req.url), req, res).catch((err: Error & { code?: unknown; params?: unknown }) => {
        if (res.headersSent) return void res.destroy(err)
        reply(500, { error: err.message, ...(typeof err.code === 'string' && Array.isArray(err.params) ? { xapi: [err.code, ...err.params] } : {}) })
      })
    }
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
        (err: Error & { code?: unknown; params?: unknown }) =>
          reply(500, { error: err.message, ...(typeof err.code === 'string' && Array.isArray(err.params) ? { xapi: [err.code, ...err.params] } : {}) }),
      )
    })
  })
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    const name = /^\/connect\/([^?]+)/.exec(req.url ?? '')?.[1] ?? ''
    const handler = streams.connect?.[name]
    if (!secretMatches(req.headers[SECRET_HEADER] as string | undefined, secret) || !handler) return void socket.end('HTTP/1.1 403 Forbidden\r\n\r\n')
    void handler(argsOf(req.url), socket).catch(() => socket.destroy())
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(socketPath, () => resolve())
  })
  return server
}
