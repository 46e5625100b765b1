// A whole host in this process on the simulated hypervisor, wired as src/daemon/serve.ts wires
// the daemon: the pool database (in memory instead of etcd), the real xapi message
// implementations behind the real dispatcher and JSON-RPC codec, the real host agent on a Unix
// socket in a temp dir over SimBackend and SimNetwork, the real file SR in that dir. No root, no
// etcd, no QEMU emulator: qemu-img is the one program it runs.
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { AgentClient } from '../../src/agent/client.js'
import type { HostFacts, HostPowerAction } from '../../src/agent/contract.js'
import { agentMethods, startAgentServer } from '../../src/agent/server.js'
import { socketTransport } from '../../src/agent/socket-transport.js'
import { SimBackend } from '../../src/agent/sim/backend.js'
import { SimNetwork } from '../../src/agent/sim/network.js'
import { agentStreams } from '../../src/agent/streams.js'
import { VmRuntime } from '../../src/agent/vms.js'
import { bootstrap, loadIdentity } from '../../src/daemon/bootstrap.js'
import type { Database } from '../../src/db/database.js'
import { handleJsonRpc } from '../../src/http/rpc.js'
import { Dispatcher } from '../../src/xapi/dispatch.js'
import { DEFAULT_SETTINGS, ownAgentOnly, startOfDay, vmPausedOnIoError, vmStoppedOnItsOwn, type Services } from '../../src/xapi/index.js'
import { memoryPoolDatabase } from './memory-db.js'

const GiB = 2 ** 30

/** A machine with room for many small VMs: 8 CPUs, 64 GiB, one NIC. */
const FACTS: HostFacts = {
  hostname: 'sim-host',
  cpuCount: 8,
  cpus: Array.from({ length: 8 }, () => ({ vendor: 'GenuineIntel', modelname: 'Simulated CPU', model: '85', family: '6', stepping: '7', speed: '2400.000', flags: 'fpu vme de pse tsc msr pae mce cx8 apic sep', features: '' })),
  socketCount: 1,
  memoryTotal: 64 * GiB,
  memoryFree: 60 * GiB,
  kernel: '6.1.0-sim',
  qemuVersion: '7.2.0',
  kvm: false,
  biosStrings: {},
  network: {
    nics: [{ device: 'eth0', mac: '52:54:00:00:00:01', mtu: 1500, physical: true, carrier: true, speed: 1000, fullDuplex: true, vendorId: '', deviceId: '', pciBusPath: '', ipv4: [{ address: '192.0.2.10', prefix: 24, dynamic: false }], ipv6: [] }],
    gateway4: { device: 'eth0', address: '192.0.2.1' },
    dns: [],
  },
}

export class XapiCallError extends Error {
  constructor(readonly description: string[]) {
    super(description.join(' '))
  }

  get code(): string {
    return this.description[0] ?? ''
  }
}

export interface SimHost {
  /** A XenAPI call as a client sends it (JSON-RPC 2.0); rejects with XapiCallError on a failure. */
  call<T = any>(method: string, ...params: unknown[]): Promise<T>
  /** A call with this host's root session first. */
  c<T = any>(method: string, ...params: unknown[]): Promise<T>
  readonly session: string
  readonly backend: SimBackend
  readonly network: SimNetwork
  readonly db: Database
  readonly svc: Services
  /** This host's agent client (what svc.agentFor(svc.hostRef) answers): tests wrap its calls to count or fail them. */
  readonly agent: AgentClient
  readonly dataDir: string
  /** What host.power asked of this host's daemon (stop, restart), in order. */
  readonly powerRequests: HostPowerAction[]
  /** Waits until what VMs did on their own (stops, pauses) has been reported and the API layer has acted on it. */
  settled(): Promise<void>
  /** Stops the agent and removes the data dir; simulated VMs are forgotten. */
  dispose(): Promise<void>
}

/** A host on the simulator with the "Flotilla test guest" template (its disk a small blank image). */
export async function startSimHost(): Promise<SimHost> {
  const dataDir = await mkdtemp(join(tmpdir(), 'flotilla-sim-'))
  const runDir = join(dataDir, 'run')
  const db = memoryPoolDatabase()
  const identity = loadIdentity(dataDir)
  const backend = new SimBackend()
  const network = new SimNetwork()
  let svc: Services | undefined
  const pending = new Set<Promise<void>>()
  let reportedStops = 0
  const track = (work: () => Promise<void>) => {
    if (!svc) return
    const done = work().catch((e: Error) => console.error(`sim host: ${e.message}`))
    pending.add(done)
    void done.finally(() => pending.delete(done))
  }
  const vms = new VmRuntime(
    { accel: 'tcg', runDir: join(runDir, 'vm'), ovmfDir: '/usr/share/OVMF' },
    identity.hostUuid,
    {
      stopped: (uuid, reason, nvram) => {
        reportedStops++
        track(() => vmStoppedOnItsOwn(svc!, uuid, reason, nvram))
      },
      pausedOnIoError: (uuid, device, noSpace) => track(() => vmPausedOnIoError(svc!, uuid, device, noSpace)),
    },
    backend,
    network,
  )
  const streams = agentStreams(vms)
  const socket = join(dataDir, 'agent.sock')
  const powerRequests: HostPowerAction[] = []
  const agentServer = await startAgentServer(socket, identity.agentSecret, agentMethods(vms, undefined, { power: (action) => void powerRequests.push(action) }), streams)
  const agent = new AgentClient(socketTransport(socket, identity.agentSecret), streams.stream)
  const { generatedPassword } = await bootstrap(db, identity, FACTS, '192.0.2.10')
  const publicUrl = 'https://192.0.2.10'
  svc = { db, agentFor: ownAgentOnly(identity.hostRef, agent), hostRef: identity.hostRef, settings: DEFAULT_SETTINGS, publicUrl, srRoot: join(dataDir, 'sr') }
  const guestImage = join(dataDir, 'test-guest.img')
  await writeFile(guestImage, '')
  await truncate(guestImage, 64 * 2 ** 20)
  await startOfDay(svc, guestImage)
  const dispatcher = new Dispatcher(svc)
  let id = 0

  const call = async <T>(method: string, ...params: unknown[]): Promise<T> => {
    const body = Buffer.from(JSON.stringify({ jsonrpc: '2.0', method, params, id: ++id }))
    const reply = JSON.parse((await handleJsonRpc(dispatcher, body)).body.toString()) as { result?: T; error?: { message: string; data?: string[] } }
    if (reply.error) throw new XapiCallError([reply.error.message, ...(reply.error.data ?? [])])
    return reply.result as T
  }
  const session = await call<string>('session.login_with_password', 'root', process.env.FLOTILLA_ROOT_PASSWORD || generatedPassword)
  const host = svc

  const settled = async () => {
    const deadline = Date.now() + 10_000
    for (;;) {
      await nextTurn()
      if (pending.size === 0 && reportedStops >= backend.unaskedStops) return
      if (Date.now() > deadline) throw new Error('the sim host did not settle')
      await Promise.all(pending)
    }
  }

  return {
    powerRequests,
    call,
    c: (method, ...params) => call(method, session, ...params),
    session,
    backend,
    network,
    db,
    svc: host,
    agent,
    dataDir,
    settled,
    async dispose() {
      await settled()
      // Background work (garbage collection, tasks) finishes before the files go.
      for (const deadline = Date.now() + 10_000; [...db.rows('task')].some((t) => t.stored.status === 'pending') && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10))
      await new Promise<void>((resolve) => agentServer.close(() => resolve()))
      await rm(dataDir, { recursive: true, force: true })
    },
  }
}
