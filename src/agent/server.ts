// The host agent's endpoints: JSON calls, streams and connects over a Unix socket, each request
// carrying the per-host secret, and the same over mutual TLS for the other hosts of the pool.
// The API layer reaches host-local work only through here, even on the same host (bulk streams
// of an agent in the same process skip the socket: see AgentClient.stream).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import type { ListenOptions, Server as NetServer } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Duplex } from 'node:stream'
import { timingSafeEqual } from 'node:crypto'
import { unlink } from 'node:fs/promises'
import { readHostFacts } from './facts.js'
import { freezeRunning, imagePath, storageMethods, withDiskPaths, withPath } from './storage.js'
import { bridgeName, vlanDeviceName, VlanUnsupportedError } from '../net/bridge.js'
import { XapiError } from '../idl/errors.js'
import type { VmRuntime } from './vms.js'
import { installServerCertificate, serverCertificate, type ServerTls } from './certificate.js'
import type { AgentContract, CallHandlers, ConnectHandlers, Contract, HostPowerAction, StreamHandlers } from './contract.js'
import { encodeFailure } from './failure.js'
import { SECRET_HEADER } from './socket-transport.js'
import type { AgentTls } from './tls-transport.js'

/**
 * What the daemon around an agent does for it: stop or restart it (host.power), change the host's
 * pool (host.follow-master); and what it lets the agent do to the host's networking.
 */
export interface AgentDaemon {
  power?(action: HostPowerAction): void
  followMaster?(address: string): Promise<void>
  /** A NIC carrying addresses (the management one) may be put into a bridge. */
  bridgeManagement?: boolean
}

/** How long host.power waits before acting, so that its answer reaches the caller first. */
const POWER_DELAY_MS = 500

export function agentMethods(vms: VmRuntime, tls?: ServerTls, daemon: AgentDaemon = {}): CallHandlers {
  const noTls = () => Promise.reject(new Error('this agent serves no TLS certificate'))
  return {
    'host.clock': async () => Date.now(),
    'host.power': async ({ action }) => {
      const power = daemon.power
      if (!power) throw new Error(`this host's daemon cannot ${action} through its agent`)
      setTimeout(() => power(action), POWER_DELAY_MS).unref()
    },
    'host.follow-master': ({ address }) => (daemon.followMaster ? daemon.followMaster(address) : Promise.reject(new Error('this agent cannot change pools'))),
    'host.facts': () => readHostFacts(),
    'host.server-certificate': () => (tls ? serverCertificate(tls) : noTls()),
    'host.install-server-certificate': (args) => (tls ? installServerCertificate(tls, args) : noTls()),
    ...storageMethods(vms),
    'vm.start': async (request) => vms.start(withDiskPaths(request)),
    'vm.resume': async ({ request, state }) => vms.start(withDiskPaths(request), imagePath(state)),
    'vm.receive': ({ request, address, exports }) => vms.receive(withDiskPaths(request), address, exports),
    'vm.migrate-send': ({ uuid, address, port, stallMs, mirror }) => vms.migrateSend(uuid, address, port, stallMs, mirror),
    'vm.received': ({ uuid, timeoutMs }) => vms.received(uuid, timeoutMs),
    'vm.nvram': async ({ uuid }) => {
      const nvram = await vms.nvram(uuid)
      return nvram ? { nvram } : {}
    },
    'vm.suspend': ({ uuid, statePath }) => vms.suspend(uuid, statePath),
    'vm.stop': ({ uuid, clean, timeoutMs }) => vms.stop(uuid, clean, timeoutMs),
    'vm.reset': ({ uuid }) => vms.reset(uuid),
    'vm.devices': ({ uuid }) => vms.devices(uuid),
    'vm.resize-disk': ({ uuid, userdevice, size }) => vms.resizeDisk(uuid, userdevice, size),
    'vm.move-disk': ({ uuid, userdevice, target, stallMs }) => vms.moveDisk(uuid, userdevice, { path: imagePath(target), format: target.format === 'raw' ? 'raw' : 'qcow2' }, stallMs),
    'vm.plug-disk': async ({ uuid, platform, disk }) => vms.plugDisk(uuid, platform, withPath(disk)),
    'vm.unplug-disk': ({ uuid, userdevice }) => vms.unplugDisk(uuid, userdevice),
    'vm.insert-cd': async ({ uuid, userdevice, image, format }) => vms.insertCd(uuid, userdevice, imagePath(image), format),
    'vm.eject-cd': ({ uuid, userdevice }) => vms.ejectCd(uuid, userdevice),
    'vm.plug-nic': ({ uuid, platform, nic }) => vms.plugNic(uuid, platform, nic),
    'vm.move-nic': ({ uuid, device, network }) => vms.moveNic(uuid, device, network),
    'vm.unplug-nic': ({ uuid, device }) => vms.unplugNic(uuid, device),
    'vm.pause': ({ uuid }) => vms.pause(uuid),
    'vm.unpause': ({ uuid }) => vms.unpause(uuid),
    'vm.set-vcpus': ({ uuid, count }) => vms.setVcpus(uuid, count),
    'vm.reattach': ({ vms: list }) => vms.reattach(list),
    'vm.list': async () => vms.runningUuids(),
    'vm.checkpoint': ({ uuid, disks, state }) => vms.checkpoint(uuid, (freezeDisk) => freezeRunning(freezeDisk, disks), state),
    'net.ensure': async ({ network }) => {
      const name = bridgeName(vms.hostUuid, network)
      await vms.network.ensureBridge(name)
      return name
    },
    'net.remove': ({ network }) => vms.network.deleteLink(bridgeName(vms.hostUuid, network)),
    'net.attach': async ({ network, device }) => {
      const name = bridgeName(vms.hostUuid, network)
      await vms.network.ensureBridge(name)
      return vms.network.attachNic(device, name, daemon.bridgeManagement === true)
    },
    'net.detach': ({ network, device }) => vms.network.detachNic(device, bridgeName(vms.hostUuid, network)),
    'net.vlan-create': async ({ device, tag, network }) => {
      const name = bridgeName(vms.hostUuid, network)
      await vms.network.ensureBridge(name)
      await vms.network.createVlan(device, tag, name).catch((err: Error) => {
        if (err instanceof VlanUnsupportedError) throw new XapiError('OPERATION_NOT_ALLOWED', [`VLAN ${tag} on ${device}: ${err.message}`])
        throw err
      })
    },
    'net.vlan-remove': ({ device, tag }) => vms.network.deleteLink(vlanDeviceName(device, tag)),
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
export interface AgentStreams<C extends Contract = AgentContract> {
  stream?: StreamHandlers<C>
  connect?: ConnectHandlers<C>
}

/** A handler of a table by the name a request gives (own names only: never `constructor` or `toString`). */
function handlerOf<F>(table: object | undefined, name: string): F | undefined {
  return table && Object.hasOwn(table, name) ? (table as Record<string, F>)[name] : undefined
}

function argsOf(url: string | undefined): unknown {
  const text = new URL(url ?? '/', 'http://agent').searchParams.get('args')
  return text ? JSON.parse(text) : null
}

/** Which requests come from a caller the server's transport has authenticated, and what the others are told. */
interface Admission {
  admits(req: IncomingMessage): boolean
  refusal: string
}

/** The agent's routing of calls, streams and connects on `server`, for the requests `admission` admits. */
function serveAgent<C extends Contract>(server: Server | HttpsServer, admission: Admission, methods: CallHandlers<C>, streams: AgentStreams<C>): void {
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    if (!admission.admits(req)) return reply(403, { error: admission.refusal })
    const streamName = /^\/stream\/([^?]+)/.exec(req.url ?? '')?.[1]
    if (streamName !== undefined) {
      const handler = handlerOf<(args: unknown, body: IncomingMessage, out: typeof res) => Promise<void>>(streams.stream, streamName)
      if (!handler) return reply(404, { error: `no such agent stream: ${streamName}` })
      return void handler(argsOf(req.url), req, res).catch((err: unknown) => {
        if (res.headersSent) return void res.destroy(err as Error)
        reply(500, encodeFailure(err))
      })
    }
    const method = handlerOf<(args: unknown) => Promise<unknown>>(methods, (req.url ?? '').replace(/^\/call\//, ''))
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
      // A handler that throws at once fails the call like one that rejects.
      Promise.resolve(args)
        .then(method)
        .then(
          (result) => reply(200, { result }),
          (err: unknown) => reply(500, encodeFailure(err)),
        )
    })
  })
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    const name = /^\/connect\/([^?]+)/.exec(req.url ?? '')?.[1] ?? ''
    const handler = handlerOf<(args: unknown, socket: Duplex) => Promise<void>>(streams.connect, name)
    if (!admission.admits(req) || !handler) return void socket.end('HTTP/1.1 403 Forbidden\r\n\r\n')
    void handler(argsOf(req.url), socket).catch(() => socket.destroy())
  })
}

function listening<S extends NetServer>(server: S, at: ListenOptions): Promise<S> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(at, () => {
      server.off('error', reject)
      resolve(server)
    })
  })
}

/** The agent on this host's Unix socket: every request carries the host's secret. */
export async function startAgentServer<C extends Contract = AgentContract>(socketPath: string, secret: string, methods: CallHandlers<C>, streams: AgentStreams<C> = {}): Promise<Server> {
  await unlink(socketPath).catch(() => undefined)
  const server = createServer()
  serveAgent(server, { admits: (req) => secretMatches(req.headers[SECRET_HEADER] as string | undefined, secret), refusal: 'agent secret missing or wrong' }, methods, streams)
  return listening(server, { path: socketPath })
}

/** The agent served to the other hosts of the pool (tls-transport.ts is the client). */
export interface AgentTlsServer extends HttpsServer {
  /**
   * Serves with another pool CA and host certificate (a joiner adopts the master's CA, an ejected
   * host makes its own) and closes every connection made under the old trust: a host that is no
   * longer of the pool keeps no way in.
   */
  replaceTls(tls: AgentTls): void
}

/**
 * The agent on `https://<host>:<port>` with mutual TLS: only a client presenting a certificate
 * of the pool CA gets a TLS session, so a request needs no secret. The request handling is the
 * Unix socket server's (serveAgent); the admission check below restates what TLS ensured.
 */
export async function startAgentTlsServer<C extends Contract = AgentContract>(
  at: { host: string; port: number; tls: AgentTls },
  methods: CallHandlers<C>,
  streams: AgentStreams<C> = {},
): Promise<AgentTlsServer> {
  const server = createHttpsServer({ ...at.tls, requestCert: true, rejectUnauthorized: true })
  const sessions = new Set<TLSSocket>()
  server.on('secureConnection', (socket: TLSSocket) => {
    sessions.add(socket)
    socket.once('close', () => sessions.delete(socket))
  })
  const replaceTls = (tls: AgentTls) => {
    server.setSecureContext(tls)
    for (const socket of sessions) socket.destroy()
  }
  serveAgent(server, { admits: (req) => (req.socket as TLSSocket).authorized, refusal: 'no client certificate of the pool' }, methods, streams)
  return listening(Object.assign(server, { replaceTls }), { port: at.port, host: at.host })
}
