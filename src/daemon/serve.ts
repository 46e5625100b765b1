// `flotilla serve`: the daemon. Starts (or adopts) etcd, loads the pool database, starts the
// host agent, bootstraps the pool on first start, then serves the XenAPI over HTTP and HTTPS.
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { alive } from '../lib/process.js'
import { AgentClient } from '../agent/client.js'
import { socketTransport } from '../agent/socket-transport.js'
import { agentMethods, startAgentServer, startAgentTlsServer } from '../agent/server.js'
import type { HostPowerAction } from '../agent/contract.js'
import type { ServerTls } from '../agent/certificate.js'
import { readHostFacts } from '../agent/facts.js'
import { VmRuntime } from '../agent/vms.js'
import { qemuBackend } from '../qemu/qemu-backend.js'
import { linuxNetwork } from '../net/bridge.js'
import { agentStreams } from '../agent/streams.js'
import { DEFAULT_IDLE_MS, HostConsole } from '../agent/host-console.js'
import { bulkRoutes } from '../http/routes.js'
import { Database } from '../db/database.js'
import { noQuorumStore, readCopy, replicaOf, saveCopy, type DatabaseCopy } from '../db/copy.js'
import { EtcdStore, type StoreTls } from '../db/etcd.js'
import { closeListeners, listen, reloadCertificate, type HttpOptions } from '../http/server.js'
import { DEFAULT_CONNECTION_LIMITS, type ConnectionLimits } from '../http/connections.js'
import { Dispatcher } from '../xapi/dispatch.js'
import { agentUrlKey, collectAllGarbage, keepPoolRecords, memberKey, otherMaster, runPoolDuties, srRootKey, collectIdleSessions, collectTasks, DEFAULT_SETTINGS, startOfDay, vmPausedOnIoError, vmStoppedOnItsOwn, type Services, type Settings } from '../xapi/index.js'
import { peekRole } from '../xapi/remote-pool.js'
import { defaultAddress } from './address.js'
import { bootstrap, loadIdentity } from './bootstrap.js'
import { EtcdSupervisor, etcdPorts, localClientUrl, readMembership, type EtcdPlace } from './etcd.js'
import { freePort } from '../lib/ports.js'
import { HostPresence, DEFAULT_PRESENCE, MASTER_KEY } from '../db/presence.js'
import { XapiError } from '../idl/errors.js'
import { ensurePoolTrust } from './pool-ca.js'
import { poolMembership } from './pool-host.js'
import { poolAgents } from './pool-agents.js'
import { poolRoleRoute, poolSecretRoute } from '../http/pool.js'
import { ensureCertificate } from './tls.js'

const OVMF_DIR = '/usr/share/OVMF'
/** A member's copy of the pool database (db/copy.ts), in its data dir. */
const DB_COPY = 'pool-db-copy.json'
/** How long a member with a copy waits for its pool database at start before it serves the copy. */
const NO_QUORUM_START_MS = 4000
/** How often a member saves its copy (when the database changed). */
const COPY_EVERY_MS = 5000
/** How long a host starting as master waits for each other host to say whether it is master. */
const ROLE_PROBE_MS = 2000
/** Where scripts/build-test-guest.sh caches the test guest (outside any data dir). */
const DEFAULT_TEST_GUEST_IMAGE = '/var/cache/flotilla/test-guest/test-guest.img'

export interface ServeOptions {
  dataDir: string
  address?: string
  httpPort: number
  httpsPort: number
  requestLog?: string
}

const seconds = (name: string, fallback: number) => {
  const v = process.env[name]
  return v !== undefined && v !== '' ? Number(v) * 1000 : fallback
}
const count = (name: string, fallback: number) => Number(process.env[name] || fallback)

/** Test and tuning knobs, from the environment (seconds). */
function settingsFromEnv(): Settings {
  const login = DEFAULT_SETTINGS.login
  return {
    sessionIdleMs: seconds('FLOTILLA_SESSION_IDLE_SECONDS', DEFAULT_SETTINGS.sessionIdleMs),
    maxSessionsPerUser: count('FLOTILLA_MAX_SESSIONS_PER_USER', DEFAULT_SETTINGS.maxSessionsPerUser),
    taskKeepMs: seconds('FLOTILLA_TASK_KEEP_SECONDS', DEFAULT_SETTINGS.taskKeepMs),
    pendingTaskMs: seconds('FLOTILLA_PENDING_TASK_SECONDS', DEFAULT_SETTINGS.pendingTaskMs),
    maxFinishedTasks: count('FLOTILLA_MAX_FINISHED_TASKS', DEFAULT_SETTINGS.maxFinishedTasks),
    login: {
      ...login,
      addressBurst: count('FLOTILLA_LOGIN_BURST', login.addressBurst),
      addressPerSecond: count('FLOTILLA_LOGIN_PER_SECOND', login.addressPerSecond),
      maxWaitMs: seconds('FLOTILLA_LOGIN_MAX_WAIT_SECONDS', login.maxWaitMs),
    },
  }
}

/** The HTTP(S) timeouts and connection cap, from the environment (seconds). */
function connectionLimitsFromEnv(): ConnectionLimits {
  const d = DEFAULT_CONNECTION_LIMITS
  return {
    headersTimeoutMs: seconds('FLOTILLA_HTTP_HEADERS_SECONDS', d.headersTimeoutMs),
    keepAliveTimeoutMs: seconds('FLOTILLA_HTTP_KEEPALIVE_SECONDS', d.keepAliveTimeoutMs),
    stallTimeoutMs: seconds('FLOTILLA_HTTP_STALL_SECONDS', d.stallTimeoutMs),
    rpcBodyTimeoutMs: seconds('FLOTILLA_HTTP_RPC_BODY_SECONDS', d.rpcBodyTimeoutMs),
    tlsHandshakeTimeoutMs: seconds('FLOTILLA_TLS_HANDSHAKE_SECONDS', d.tlsHandshakeTimeoutMs),
    maxConnectionsPerAddress: count('FLOTILLA_MAX_CONNECTIONS_PER_ADDRESS', d.maxConnectionsPerAddress),
  }
}

export async function serve(opts: ServeOptions): Promise<void> {
  const runDir = join(opts.dataDir, 'run')
  mkdirSync(runDir, { recursive: true, mode: 0o700 })
  mkdirSync(join(opts.dataDir, 'tls'), { recursive: true, mode: 0o700 })
  const pidFile = join(runDir, 'flotilla.pid')
  if (existsSync(pidFile)) {
    const other = Number(readFileSync(pidFile, 'utf8'))
    if (other && other !== process.pid && alive(other)) throw new Error(`another flotilla (pid ${other}) serves ${opts.dataDir}`)
  }
  writeFileSync(pidFile, String(process.pid))
  // A join or an eject moves the host to another pool database: the host then starts again in
  // this process, on the new database (xapi restarts its toolstack the same way).
  let etcd: EtcdSupervisor | undefined
  for (;;) {
    const ended = await runHost(opts, etcd)
    etcd = ended.etcd
    if (ended.next === 'stop') break
  }
  await etcd?.stop()
  rmSync(pidFile, { force: true })
  process.exit(0)
}

/** Where the daemon's database client connects: the pool's voters once joined, else its own member. */
function storeEndpoints(dataDir: string, place: EtcdPlace, hostUuid: string): string[] {
  const given = readMembership(dataDir, hostUuid).endpoints
  return given && given.length > 0 ? given : [localClientUrl(place)]
}

/** The port this data dir's agent serves the other hosts on: chosen once, then kept. */
async function agentPort(dataDir: string): Promise<number> {
  const file = join(dataDir, 'agent-port.json')
  if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { port: number }).port
  const port = await freePort()
  writeFileSync(file, JSON.stringify({ port }))
  return port
}

interface Ended {
  next: 'restart' | 'stop'
  etcd: EtcdSupervisor
}

async function runHost(opts: ServeOptions, runningEtcd: EtcdSupervisor | undefined): Promise<Ended> {
  const runDir = join(opts.dataDir, 'run')
  const address = opts.address ?? defaultAddress()
  const listenAddress = opts.address ?? '0.0.0.0'
  const identity = loadIdentity(opts.dataDir)
  const localFacts = await readHostFacts()
  const poolDir = join(opts.dataDir, 'pool')
  const trust = await ensurePoolTrust(poolDir, localFacts.hostname, address)
  const place: EtcdPlace = {
    address,
    listen: listenAddress,
    ports: await etcdPorts(opts.dataDir),
    tls: { ca: join(poolDir, 'ca.pem'), cert: join(poolDir, 'host.pem'), key: join(poolDir, 'host-key.pem') },
  }
  const etcd = runningEtcd ?? (await EtcdSupervisor.start(opts.dataDir, place, readMembership(opts.dataDir, identity.hostUuid)))
  const store = new EtcdStore(storeEndpoints(opts.dataDir, place, identity.hostUuid), trust)
  // A member reaches the pool database through the voters; with none reachable it serves its copy.
  const copyFile = join(opts.dataDir, DB_COPY)
  const copy = readMembership(opts.dataDir, identity.hostUuid).endpoints?.length ? readCopy(copyFile) : undefined
  try {
    await store.waitReady(copy ? NO_QUORUM_START_MS : 60_000)
  } catch (err) {
    if (!copy) throw err
    console.error(`the pool database does not answer (${(err as Error).message}): serving its copy read-only`)
    return runFromCopy(opts, { copy, etcd, place, trust, store, identity, hostname: localFacts.hostname, address, poolDir })
  }
  const db = await Database.open(store, (err) => {
    console.error(`pool database watch failed: ${err.message}`)
    process.exit(1)
  })
  const presence = new HostPresence(store, db.replica, identity.hostRef, { ...DEFAULT_PRESENCE, ttlSeconds: Number(process.env.FLOTILLA_HOST_LEASE_SECONDS ?? DEFAULT_PRESENCE.ttlSeconds) })
  const masterAddress = () => {
    const master = presence.masterRef()
    return (master && db.tryRecord('host', master)?.address) || ''
  }
  db.guard = { current: () => presence.guard(), lost: () => new XapiError('HOST_IS_SLAVE', [masterAddress()]) }
  presence.onElected = () => keepPoolRecords(db, identity.hostRef)
  const follow = await masterElsewhere(db, identity.hostRef)
  if (follow) {
    console.error(`host ${follow} was made master while this host was away: this host becomes its member`)
    // Before anything else of the start writes to this host's stale database.
    const membership = poolMembership({ dataDir: opts.dataDir, poolDir, etcd, place, store, presence, trust, identity, hostname: localFacts.hostname, address, restart: () => undefined })
    const joined = await membership.resetMaster(follow).then(
      () => true,
      (e: Error) => console.error(`becoming a member of ${follow}: ${e.message} (this host stays out of the pool; pool.emergency_reset_master tries again)`),
    )
    if (joined) {
      await store.close()
      return { next: 'restart', etcd }
    }
    presence.standAside = true
  }
  await presence.start()

  const agentSocket = join(runDir, 'agent.sock')
  // The host's TLS certificate: the agent reads and replaces it, and reloads the HTTPS server below.
  const serverTls: ServerTls = { dir: join(opts.dataDir, 'tls') }
  let svc: Services | undefined
  const vms = new VmRuntime({ accel: localFacts.kvm ? 'kvm' : 'tcg', runDir: join(runDir, 'vm'), ovmfDir: OVMF_DIR }, identity.hostUuid, {
    stopped: (uuid, reason, nvram) => {
      if (svc) void vmStoppedOnItsOwn(svc, uuid, reason, nvram).catch((e: Error) => console.error(`VM ${uuid} stopped: ${e.message}`))
    },
    pausedOnIoError: (uuid, device, noSpace) => {
      if (svc) void vmPausedOnIoError(svc, uuid, device, noSpace).catch((e: Error) => console.error(`VM ${uuid} paused: ${e.message}`))
    },
  }, qemuBackend, linuxNetwork)
  // The host's login prompt over VNC, started by the first client of the control domain's console.
  const hostConsole = new HostConsole({ dir: join(runDir, 'console'), name: localFacts.hostname, idleMs: seconds('FLOTILLA_HOST_CONSOLE_IDLE_SECONDS', DEFAULT_IDLE_MS) })
  await hostConsole.stopLeftovers()
  const streams = agentStreams(vms, hostConsole)
  // host.shutdown stops this daemon, host.reboot starts it again (the machine itself stays up).
  let powerRequested: (action: HostPowerAction) => void = () => undefined
  const powered = new Promise<HostPowerAction>((resolve) => (powerRequested = resolve))
  const methods = agentMethods(vms, serverTls, {
    power: (action) => powerRequested(action),
    // pool.recover_slaves on another master sends this host there (the daemon's membership does it).
    followMaster: (to) => (svc?.membership ? svc.membership.resetMaster(to) : Promise.reject(new Error('the host is still starting'))),
    // Bridging the management NIC moves the host's address: only where the host's owner asks (the lab's hosts).
    bridgeManagement: process.env.FLOTILLA_BRIDGE_MANAGEMENT === '1',
  })
  const agentServer = await startAgentServer(agentSocket, identity.agentSecret, methods, streams)
  const agent = new AgentClient(socketTransport(agentSocket, identity.agentSecret), streams.stream)
  // The same agent for the pool's other hosts, over mutual TLS with the pool CA.
  const port = await agentPort(opts.dataDir)
  const poolAgentServer = await startAgentTlsServer({ host: listenAddress, port, tls: trust }, methods, streams)
  const agentUrl = `https://${address.includes(':') ? `[${address}]` : address}:${port}`
  const facts = await agent.call('host.facts')
  const initialPasswordFile = join(opts.dataDir, 'initial-root-password')
  const { generatedPassword } = await bootstrap(db, identity, facts, address)
  if (generatedPassword) {
    writeFileSync(initialPasswordFile, `${generatedPassword}\n`, { mode: 0o600 })
    console.log(`root password (shown once; also in ${initialPasswordFile} until changed): ${generatedPassword}`)
  }
  const srRoot = join(opts.dataDir, 'sr')
  // Which etcd member is this host's (the master's membership upkeep reads it), and where its agent is.
  await db.transact((tx) => {
    if (tx.readRaw(memberKey(identity.hostRef)) !== etcd.name) tx.writeRaw(memberKey(identity.hostRef), etcd.name)
    if (tx.readRaw(agentUrlKey(identity.hostRef)) !== agentUrl) tx.writeRaw(agentUrlKey(identity.hostRef), agentUrl)
    if (tx.readRaw(srRootKey(identity.hostRef)) !== srRoot) tx.writeRaw(srRootKey(identity.hostRef), srRoot)
  })

  const agents = poolAgents(db, identity.hostRef, agent, trust)
  let restartRequested: (() => void) | undefined
  const restart = new Promise<void>((resolve) => (restartRequested = resolve))
  const publicHost = opts.address ?? address
  const publicUrl = opts.httpsPort === 443 ? `https://${publicHost}` : `https://${publicHost}:${opts.httpsPort}`
  svc = {
    db,
    pool: { isMaster: () => presence.isMaster(), inContact: () => presence.leaseFresh, masterRef: () => presence.masterRef() },
    agentFor: agents.agentFor,
    hostRef: identity.hostRef,
    settings: settingsFromEnv(),
    onRootPasswordChanged: () => rm(initialPasswordFile, { force: true }),
    publicUrl,
    srRoot,
  }
  svc.membership = poolMembership({ dataDir: opts.dataDir, poolDir, etcd, place, store, presence, trust, identity, hostname: localFacts.hostname, address, restart: () => restartRequested?.() })
  await startOfDay(svc, process.env.FLOTILLA_TEST_GUEST_IMAGE ?? DEFAULT_TEST_GUEST_IMAGE)
  collectAllGarbage(svc)
  const tls = await ensureCertificate(join(opts.dataDir, 'tls'), facts.hostname, address)
  const requestLog = opts.requestLog
  const http: HttpOptions = {
    dispatcher: new Dispatcher(svc),
    routes: bulkRoutes(svc).set('/pool_secret', poolSecretRoute(svc)).set('/pool_role', poolRoleRoute(svc)),
    requestLog: requestLog ? (line) => appendFileSync(requestLog, `${line}\n`) : undefined,
    limits: connectionLimitsFromEnv(),
  }
  const listeners = await listen(http, listenAddress, opts.httpPort, { port: opts.httpsPort, key: tls.key, cert: tls.cert })
  serverTls.reload = (t) => reloadCertificate(listeners, t)

  const housekeeping = setInterval(() => {
    void collectTasks(svc!).catch((e: Error) => console.error(`task collection: ${e.message}`))
    void collectIdleSessions(svc!).catch((e: Error) => console.error(`session collection: ${e.message}`))
  }, Number(process.env.FLOTILLA_HOUSEKEEPING_SECONDS ?? 30) * 1000)
  // A member keeps a copy of the pool database, for a start while the database has no quorum.
  let savedRev = -1
  const copying = setInterval(() => {
    if (presence.isMaster() || db.replica.appliedRev === savedRev) return
    savedRev = db.replica.appliedRev
    try {
      saveCopy(copyFile, db.replica)
    } catch (e) {
      console.error(`saving the copy of the pool database: ${(e as Error).message}`)
    }
  }, COPY_EVERY_MS)
  const masterDuties = runPoolDuties(svc, store, presence, (urls) => etcd.noteEndpoints(urls))

  const host = listenAddress === '0.0.0.0' ? address : listenAddress
  console.log(`flotilla ready: https://${host}:${opts.httpsPort}/ and http://${host}:${opts.httpPort}/ (host ${identity.hostRef}, data ${opts.dataDir})`)

  const stopRequested = new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
  })
  const next = await Promise.race([stopRequested.then(() => 'stop' as const), restart.then(() => 'restart' as const), powered])
  if (next === 'stop') console.log('flotilla stopping')
  clearInterval(housekeeping)
  clearInterval(copying)
  masterDuties.stop()
  // The call that asked for a restart (pool.join) is still being answered.
  if (next === 'restart') await new Promise((r) => setTimeout(r, 500))
  await closeListeners(listeners)
  // A clean stop hands the master key over at once instead of letting it expire.
  await presence.close()
  await vms.detachAll()
  await hostConsole.shutdown()
  agentServer.close()
  poolAgentServer.close()
  poolAgentServer.closeAllConnections()
  agents.close()
  await store.close()
  return { next, etcd }
}

/**
 * The other host to follow when this one starts as master (its database's master key is absent
 * or its own) while another host of its pool answers as master: one made master by
 * emergency_transition_to_master while this host was away (xapi checks for other masters at start).
 */
async function masterElsewhere(db: Database, me: string): Promise<string | undefined> {
  const held = db.raw(MASTER_KEY)?.value
  const others = db.refs('host').filter((h) => h !== me)
  if (others.length === 0 || (held !== undefined && held !== me)) return undefined
  const answers = await Promise.all(
    others.map(async (h) => {
      const address = String(db.tryRecord('host', h)?.address ?? '')
      return { address, answer: address ? await peekRole(address, ROLE_PROBE_MS) : undefined }
    }),
  )
  return otherMaster(me, held, answers)
}

interface CopyStart {
  copy: DatabaseCopy
  etcd: EtcdSupervisor
  place: EtcdPlace
  trust: StoreTls
  store: EtcdStore
  identity: ReturnType<typeof loadIdentity>
  hostname: string
  address: string
  poolDir: string
}

/**
 * A member whose pool database has no quorum at start (its master is gone, and with it the only
 * voter): the API serves the member's copy of the database, read-only, to slave_local sessions;
 * everything else answers HOST_IN_EMERGENCY_MODE. The host agent is not started (the QEMUs run on
 * by themselves, adopted at the next normal start). The host starts normally as soon as the
 * database answers, or as master after emergency_transition_to_master.
 */
async function runFromCopy(opts: ServeOptions, h: CopyStart): Promise<Ended> {
  const db = new Database(noQuorumStore, replicaOf(h.copy))
  // Never started: it holds no lease and never campaigns; it names the master of the copy.
  const presence = new HostPresence(h.store, db.replica, h.identity.hostRef)
  let restartRequested: (() => void) | undefined
  const restart = new Promise<void>((resolve) => (restartRequested = resolve))
  const publicHost = opts.address ?? h.address
  const svc: Services = {
    db,
    pool: { isMaster: () => false, inContact: () => false, masterRef: () => presence.masterRef() },
    agentFor: () => {
      throw new XapiError('HOST_IN_EMERGENCY_MODE')
    },
    hostRef: h.identity.hostRef,
    settings: settingsFromEnv(),
    publicUrl: opts.httpsPort === 443 ? `https://${publicHost}` : `https://${publicHost}:${opts.httpsPort}`,
    srRoot: join(opts.dataDir, 'sr'),
  }
  svc.membership = poolMembership({ dataDir: opts.dataDir, poolDir: h.poolDir, etcd: h.etcd, place: h.place, store: h.store, presence, trust: h.trust, identity: h.identity, hostname: h.hostname, address: h.address, restart: () => restartRequested?.() })
  const listenAddress = opts.address ?? '0.0.0.0'
  const tls = await ensureCertificate(join(opts.dataDir, 'tls'), h.hostname, h.address)
  const requestLog = opts.requestLog
  const http: HttpOptions = {
    dispatcher: new Dispatcher(svc),
    routes: new Map([['/pool_role', poolRoleRoute(svc)]]),
    requestLog: requestLog ? (line) => appendFileSync(requestLog, `${line}\n`) : undefined,
    limits: connectionLimitsFromEnv(),
  }
  const listeners = await listen(http, listenAddress, opts.httpPort, { port: opts.httpsPort, key: tls.key, cert: tls.cert })
  console.log(`flotilla ready, in emergency mode (no pool database quorum: serving the copy of revision ${h.copy.rev} read-only): https://${h.address}:${opts.httpsPort}/ (host ${h.identity.hostRef}, data ${opts.dataDir})`)
  // Back to a normal start as soon as the pool database answers.
  let probing = false
  const probe = setInterval(() => {
    if (probing) return
    probing = true
    void h.store.waitReady(1000).then(
      () => restartRequested?.(),
      () => (probing = false),
    )
  }, 2000)
  const stopRequested = new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
  })
  const next = await Promise.race([stopRequested.then(() => 'stop' as const), restart.then(() => 'restart' as const)])
  clearInterval(probe)
  if (next === 'restart') await new Promise((r) => setTimeout(r, 500))
  await closeListeners(listeners)
  await h.store.close()
  return { next, etcd: h.etcd }
}
