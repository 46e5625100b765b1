// VM.pool_migrate: a running VM moves live to another host of the pool, its disks staying on SRs
// both hosts have plugged (reference/pools-migration-ha.md §2.1). The destination's QEMU is
// started from the records as a start would make it, waiting for the stream; the source sends
// memory and device state under a watchdog; the records move once the destination has all of it,
// its vCPUs still stopped, and only then is it told to run the VM: a destination that stops
// answering never runs a VM the source may run on. Any failure before the records move leaves the
// VM running on the source and removes the destination's QEMU; after it, the source's QEMU goes.
import { XapiError } from '../idl/errors.js'
import { deadline } from '../lib/deadline.js'
import { withUndo } from '../lib/undo.js'
import type { VMRecord } from '../idl/records.js'
import type { ArgsOf, CallArgs, CallName, MigrationStats } from '../agent/contract.js'
import { now, register, type CallContext, type Services } from './context.js'
import { vmHost } from './forwarding.js'
import { attachNetworksOn } from './network.js'
import { completeMove, destroyMovedFrom, moveDisk, prepareMove, type DiskMove } from './disk-motion.js'
import { imageOf, srsOfVm } from './storage.js'
import { withSrLocks } from './sr-locks.js'
import { refreshAllowedOperations, withVmOperation } from './vm.js'
import { markMigrated, networksOf, startRequest } from './vm-lifecycle.js'
import { releaseHost, reserveHost } from './vm-placement.js'

/** A migration that sends nothing for this long is cancelled: QEMU never gives up on a silent peer (pool-lab §4). */
const STALL_MS = 10_000
/** How long the destination may take to take in the last of the stream once the source has sent it. */
const RECEIVE_MS = 60_000
/** How long the destination's answers may take (its QEMU's start, its stop): a host cut off answers nothing. */
const DESTINATION_START_MS = 90_000
const DESTINATION_STOP_MS = 15_000

register('VM.pool_migrate', (ctx, [ref, host]) => {
  if (!ctx.svc.db.tryRecord('host', host)) throw new XapiError('HANDLE_INVALID', ['host', host])
  return withVmOperation(ctx, ref, 'pool_migrate', (vm) => migrateLive(ctx, ref, vm, host))
})

/**
 * Storage motion: the disks that go to other SRs on the way (VDI → SR), and the destination's
 * address the streams go to (its address on the migration network).
 */
export interface Motion {
  moves?: ReadonlyMap<string, string>
  address?: string
}

/** A running or paused VM moved live to host `dest` of this pool, the caller holding its operation. */
export async function migrateLive(ctx: CallContext, ref: string, vm: Readonly<VMRecord>, dest: string, motion: Motion = {}): Promise<void> {
  const svc = ctx.svc
  const source = vmHost(svc, vm)
  const uuid = vm.uuid
  const wanted = [...(motion.moves ?? [])].filter(([vdi, sr]) => svc.db.record('VDI', vdi).SR !== sr)
  // As xapi's localhost migration, a move to its own host changes nothing a client sees; QEMU needs no second copy, of memory nor of the disks that stay.
  if (source === dest) {
    for (const [vdi, sr] of wanted) await moveDisk(ctx, vdi, sr, { host: source, uuid, stallMs: STALL_MS })
    return
  }
  const from = svc.agentFor(source)
  // What the destination is asked is bounded; should it not answer, its own stray check stops what it made (stopStrayQemus).
  const to = <M extends CallName>(ms: number, method: M, ...args: ArgsOf<CallArgs<M>>) => deadline(ms, `the destination's ${method}`, svc.agentFor(dest).call(method, ...args))
  const paused = vm.power_state === 'Paused'
  const started = Date.now()
  let qemu: MigrationStats | undefined
  let sent = 0
  const moves = await withUndo('VM migration', async (undo) => {
    const moves: DiskMove[] = []
    for (const [vdi, sr] of wanted) moves.push(await prepareMove(ctx, vdi, sr, true, undo))
    await withSrLocks([...srsOfVm(svc, vm), ...moves.map((m) => m.sr)], async () => {
      await undo.step(`the reservation of ${uuid} on the destination`, () => reserveHost(svc, ref, { on: dest }, dest, new Map(wanted)), () => releaseHost(svc, ref))
      await attachNetworksOn(svc, networksOf(svc, vm), dest)
      const { nvram } = await from.call('vm.nvram', { uuid })
      const arriving = new Map(moves.map((m) => [m.vdi, imageOf(svc, m.target, dest)]))
      const request = { ...startRequest(svc, vm, paused, dest, arriving), ...(nvram ? { nvram } : {}) }
      const exports = moves.map((m) => userdeviceOf(svc, vm, m.vdi))
      const address = motion.address ?? svc.db.record('host', dest).address
      const { port, nbdPort } = await undo.step(`the destination QEMU of ${uuid}`, () => to(DESTINATION_START_MS, 'vm.receive', { request, address, ...(exports.length ? { exports } : {}) }), () => to(DESTINATION_STOP_MS, 'vm.stop', { uuid, clean: false }))
      const mirror = nbdPort === undefined ? {} : { mirror: { port: nbdPort, userdevices: exports } }
      qemu = await from.call('vm.migrate-send', { uuid, address, port, stallMs: STALL_MS, ...mirror })
      sent = Date.now()
      // Everything is sent and the source stopped. The destination runs nothing until told to, below,
      // so until the records say it has the VM, the source may run it on whatever the destination answers.
      if (!paused) undo.push(`the source QEMU of ${uuid}, stopped after sending`, () => from.call('vm.unpause', { uuid }))
      await to(RECEIVE_MS + DESTINATION_STOP_MS, 'vm.received', { uuid, timeoutMs: RECEIVE_MS })
      await svc.db.transact((tx) => {
        markMigrated(tx, svc, ref, dest)
        for (const move of moves) completeMove(tx, move)
      })
    })
    return moves
  }).catch((err: Error) => {
    throw err instanceof XapiError ? err : new XapiError('VM_MIGRATE_FAILED', [ref, source, dest, err.message])
  })
  if (!paused) await runOnDestination(svc, ref, dest)
  // The VM was stopped for QEMU's downtime and then until its destination ran it (bench/migrate reads this line).
  const switchOver = Date.now() - sent
  const disks = moves.length ? `, ${moves.length} disk(s) along` : ''
  console.log(`VM ${uuid} migrated to host ${svc.db.record('host', dest).uuid}${disks} in ${Date.now() - started} ms (QEMU's migration ${qemu!.totalMs} ms), downtime ${qemu!.downtimeMs + switchOver} ms (QEMU's ${qemu!.downtimeMs} ms)`)
  await from.call('vm.stop', { uuid, clean: false }).catch((e: Error) => console.error(`VM ${uuid} migrated; its QEMU on the source stays: ${e.message}`))
  await recordMigration(svc, ref, source, dest)
  for (const move of moves) await destroyMovedFrom(svc, move)
}

/** The device a VM's disk is plugged as. */
function userdeviceOf(svc: Services, vm: Readonly<VMRecord>, vdi: string): number {
  const vbd = vm.VBDs.map((v) => svc.db.record('VBD', v)).find((v) => v.VDI === vdi)
  return Number(vbd!.userdevice)
}

/**
 * The QEMUs running on this host for VMs that neither live here nor are on their way here: the
 * destinations of migrations that failed while this host was out of reach (its daemon killed,
 * the network cut), or sources left after a switch-over the orchestrator did not see through.
 * `suspects` carries those seen at the last look: one is stopped only when seen twice, `graceMs`
 * apart, as this host's copy of the database may lag behind a start or a migration that just began.
 */
export async function stopStrayQemus(svc: Services, suspects: Map<string, number>, graceMs: number): Promise<void> {
  const agent = svc.agentFor(svc.hostRef)
  const strays = new Set((await agent.call('vm.list', {})).filter((uuid) => {
    const ref = svc.db.replica.refByUuid('VM', uuid)
    const vm = ref ? svc.db.tryRecord('VM', ref) : undefined
    return !vm || (vm.resident_on !== svc.hostRef && vm.scheduled_to_be_resident_on !== svc.hostRef)
  }))
  for (const uuid of suspects.keys()) if (!strays.has(uuid)) suspects.delete(uuid)
  for (const uuid of strays) {
    const since = suspects.get(uuid)
    if (since === undefined) suspects.set(uuid, Date.now())
    else if (Date.now() - since >= graceMs) {
      suspects.delete(uuid)
      console.log(`VM ${uuid}: its QEMU runs here though the VM lives elsewhere (a migration's leftover): stopped`)
      await agent.call('vm.stop', { uuid, clean: false })
    }
  }
}

/** The switch-over's last step: the VM the records now place on `dest` runs there; should that fail, it is Paused there, and says so. */
async function runOnDestination(svc: Services, ref: string, dest: string): Promise<void> {
  const uuid = svc.db.record('VM', ref).uuid
  try {
    await deadline(DESTINATION_STOP_MS, "the destination's vm.unpause", svc.agentFor(dest).call('vm.unpause', { uuid }))
  } catch (err) {
    await svc.db.transact((tx) => {
      tx.update('VM', ref, { power_state: 'Paused' })
      refreshAllowedOperations(tx, ref)
      tx.create('message', { name: 'VM_MIGRATE_FAILED', priority: 2, cls: 'VM', obj_uuid: uuid, timestamp: now(), body: `The VM moved to its destination host but did not start running there (${(err as Error).message}): it is paused there; unpause it.` })
    })
  }
}

/** xapi's VM_MIGRATED message. */
function recordMigration(svc: Services, ref: string, source: string, dest: string): Promise<unknown> {
  const vm = svc.db.record('VM', ref)
  const host = (h: string) => `'${svc.db.record('host', h).name_label}' (uuid: ${svc.db.record('host', h).uuid})`
  return svc.db.transact((tx) =>
    tx.create('message', { name: 'VM_MIGRATED', priority: 5, cls: 'VM', obj_uuid: vm.uuid, timestamp: now(), body: `VM '${vm.name_label}' (uuid: ${vm.uuid}) migrated from host ${host(source)} to host ${host(dest)}` }),
  )
}
