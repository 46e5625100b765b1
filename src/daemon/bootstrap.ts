// First start and every start: the pool, this host and its metrics/CPUs, its control domain and
// PIFs, the root account. A standalone host is a pool of one whose master it is.
import { randomBytes, randomUUID } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { HostFacts } from '../agent/contract.js'
import type { Database } from '../db/database.js'
import { newRef } from '../db/database.js'
import { API_VERSION, formatDatetime, NULL_REF, XAPI_VERSION } from '../idl/index.js'
import { accountKey, hashPassword } from '../xapi/accounts.js'
import { ensureControlDomain } from '../xapi/host.js'
import { refreshHostAllowedOperations } from '../xapi/host-ops.js'
import { syncPifs } from '../xapi/pif.js'
import { hostCpuFeatures, poolCpuInfo } from '../xapi/cpu-levelling.js'

export const FLOTILLA_VERSION = '0.1.0'

export interface Identity {
  hostRef: string
  hostUuid: string
  agentSecret: string
}

/** This host's identity in the pool, kept in the data dir (readable by root only). */
export function loadIdentity(dataDir: string): Identity {
  const file = join(dataDir, 'identity.json')
  if (existsSync(file)) {
    const identity = JSON.parse(readFileSync(file, 'utf8')) as Partial<Identity> & Omit<Identity, 'hostUuid'>
    if (identity.hostUuid) return identity as Identity
    // Data dirs from before hostUuid existed: give the host one (it names its bridges).
    const upgraded = { ...identity, hostUuid: randomUUID() }
    writeFileSync(file, JSON.stringify(upgraded), { mode: 0o600 })
    return upgraded
  }
  const identity = { hostRef: newRef(), hostUuid: randomUUID(), agentSecret: randomBytes(32).toString('hex') }
  writeFileSync(file, JSON.stringify(identity), { mode: 0o600 })
  return identity
}

/** host.software_version as XCP-ng 8.1 reports it (clients key features off these), plus our own. */
export function softwareVersion(facts: HostFacts): Record<string, string> {
  return {
    product_version: '8.1.0',
    product_version_text: '8.1',
    product_version_text_short: '8.1',
    platform_name: 'XCP',
    platform_version: '3.1.0',
    product_brand: 'XCP-ng',
    build_number: `flotilla-${FLOTILLA_VERSION}`,
    git_id: '',
    hostname: 'localhost',
    date: '2026-11-26',
    xapi: XAPI_VERSION,
    xen: facts.qemuVersion ? `qemu-${facts.qemuVersion}${facts.kvm ? '-kvm' : '-tcg'}` : 'qemu',
    linux: facts.kernel,
    xencenter_min: `${API_VERSION.major}.${API_VERSION.minor}`,
    xencenter_max: `${API_VERSION.major}.${API_VERSION.minor}`,
    network_backend: 'bridge',
    db_schema: '5.504',
    flotilla: FLOTILLA_VERSION,
  }
}

function cpuInfo(facts: HostFacts): Record<string, string> {
  const cpu = facts.cpus[0]
  return {
    cpu_count: String(facts.cpuCount),
    socket_count: String(facts.socketCount),
    vendor: cpu?.vendor ?? '',
    speed: cpu?.speed ?? '',
    modelname: cpu?.modelname ?? '',
    family: cpu?.family ?? '',
    model: cpu?.model ?? '',
    stepping: cpu?.stepping ?? '',
    flags: cpu?.flags ?? '',
    features: '',
    features_hvm: '',
    features_pv: '',
    ...hostCpuFeatures(cpu?.flags ?? ''),
  }
}

/** Creates what a first start needs and refreshes this host's facts; returns the generated root password if one was made. */
export async function bootstrap(db: Database, identity: Identity, facts: HostFacts, address: string): Promise<{ generatedPassword?: string }> {
  const hostRef = identity.hostRef
  const stamp = formatDatetime(new Date())
  const given = process.env.FLOTILLA_ROOT_PASSWORD
  const password = given || randomBytes(12).toString('base64url')
  const hashed = await hashPassword(password)
  let madeRoot = false
  await db.transact((tx) => {
    madeRoot = false
    if (tx.readRaw(accountKey('root')) === undefined) {
      tx.writeRaw(accountKey('root'), hashed)
      madeRoot = true
    }
    const hostFields = {
      name_label: facts.hostname,
      hostname: facts.hostname,
      address,
      enabled: true,
      API_version_major: API_VERSION.major,
      API_version_minor: API_VERSION.minor,
      API_version_vendor: 'XenSource',
      software_version: softwareVersion(facts),
      cpu_info: cpuInfo(facts),
      bios_strings: facts.biosStrings,
      capabilities: ['hvm-3.0-x86_64'],
      sched_policy: 'credit',
      edition: 'xcp-ng',
      license_params: { sku_type: 'free', restrict_vtpm: 'false' },
      virtual_hardware_platform_versions: [0, 1, 2],
    }
    if (!tx.exists('host', hostRef)) {
      const metrics = tx.create('host_metrics', { memory_total: facts.memoryTotal, memory_free: facts.memoryFree, live: true, last_updated: stamp })
      tx.create('host', { ...hostFields, uuid: identity.hostUuid, metrics, other_config: { agent_start_time: String(Date.now() / 1000) } }, hostRef)
      facts.cpus.forEach((cpu, number) =>
        tx.create('host_cpu', {
          host: hostRef,
          number,
          vendor: cpu.vendor,
          speed: Math.round(Number(cpu.speed) || 0),
          modelname: cpu.modelname,
          family: Number(cpu.family) || 0,
          model: Number(cpu.model) || 0,
          stepping: cpu.stepping,
          flags: cpu.flags,
          features: cpu.features,
        }),
      )
    } else {
      const host = tx.get('host', hostRef)
      tx.update('host', hostRef, { ...hostFields, name_label: host.name_label, other_config: { ...(host.other_config as object), agent_start_time: String(Date.now() / 1000) } })
      const metrics = String(host.metrics)
      if (tx.exists('host_metrics', metrics)) tx.update('host_metrics', metrics, { memory_total: facts.memoryTotal, memory_free: facts.memoryFree, live: true, last_updated: stamp })
    }
    if (db.first('pool') === NULL_REF) {
      tx.create('pool', {
        name_label: '',
        master: hostRef,
        restrictions: { restrict_vtpm: 'false', restrict_vlan: 'false', restrict_pool_attached_storage: 'false', restrict_ha: 'false', restrict_marathon: 'false' },
        cpu_info: poolCpuInfo(facts.cpus[0]?.vendor ?? '', [cpuInfo(facts)]),
      })
    }
  })
  // Once the host is recorded: what xapi's start of day makes of the machine (dbsync_slave.ml).
  // A host without PIFs (a first start, or a data dir from before PIFs) is scanned, as xapi's
  // first boot runs pif-scan; later NICs wait for PIF.scan.
  await db.transact((tx) => {
    ensureControlDomain(tx, hostRef, facts.hostname, facts.cpuCount)
    syncPifs(tx, hostRef, facts.network, address, stamp, (tx.get('host', hostRef).PIFs as string[]).length === 0)
    // Operations of the previous run ended with it; the host is enabled again (xapi's start of day).
    tx.update('host', hostRef, { current_operations: {} })
    refreshHostAllowedOperations(tx, hostRef)
  })
  return madeRoot && !given ? { generatedPassword: password } : {}
}
