// VM.pool_migrate: a running VM moves live to another host of the pool, its disks staying on SRs
// both hosts have plugged (reference/pools-migration-ha.md §2.1). The destination's QEMU is
// started from the records as a start would make it, waiting for the stream; the source sends
// memory and device state under a watchdog; the records move only once the destination runs the
// VM. Any failure before that leaves the VM running on the source and removes the destination's
// QEMU; after it, the source's QEMU goes.
import { XapiError } from '../idl/errors.js'
import { withUndo } from '../lib/undo.js'
import { now, register, type CallContext, type Services } from './context.js'
import { vmHost } from './forwarding.js'
import { attachNetworksOn } from './network.js'
import { srsOfVm } from './storage.js'
import { withSrLocks } from './sr-locks.js'
import { withVmOperation } from './vm.js'
import { markMigrated, networksOf, startRequest } from './vm-lifecycle.js'
import { releaseHost, reserveHost } from './vm-placement.js'

/** A migration that sends nothing for this long is cancelled: QEMU never gives up on a silent peer (pool-lab §4). */
const STALL_MS = 10_000
/** How long the destination may take to take in the last of the stream once the source has sent it. */
const RECEIVE_MS = 60_000

register('VM.pool_migrate', (ctx, [ref, host]) => poolMigrate(ctx, ref, host))

async function poolMigrate(ctx: CallContext, ref: string, dest: string): Promise<void> {
  const svc = ctx.svc
  if (!svc.db.tryRecord('host', dest)) throw new XapiError('HANDLE_INVALID', ['host', dest])
  await withVmOperation(ctx, ref, 'pool_migrate', async (vm) => {
    const source = vmHost(svc, vm)
    // As xapi's localhost migration, it changes nothing a client sees; QEMU needs no second copy.
    if (source === dest) return
    const [from, to] = [svc.agentFor(source), svc.agentFor(dest)]
    const uuid = vm.uuid
    await withSrLocks(srsOfVm(svc, vm), () =>
      withUndo('VM.pool_migrate', async (undo) => {
        await undo.step(`the reservation of ${uuid} on the destination`, () => reserveHost(svc, ref, { on: dest }, dest), () => releaseHost(svc, ref))
        await attachNetworksOn(svc, networksOf(svc, vm), dest)
        const paused = vm.power_state === 'Paused'
        const { nvram } = await from.call('vm.nvram', { uuid })
        const request = { ...startRequest(svc, vm, paused, dest), ...(nvram ? { nvram } : {}) }
        const address = svc.db.record('host', dest).address
        const { port } = await undo.step(`the destination QEMU of ${uuid}`, () => to.call('vm.receive', { request, address }), () => to.call('vm.stop', { uuid, clean: false }))
        await from.call('vm.migrate-send', { uuid, address, port, stallMs: STALL_MS })
        // Everything is sent and the source stopped; should the destination not run the VM, the source runs it on.
        if (!paused) undo.push(`the source QEMU of ${uuid}, stopped after sending`, () => from.call('vm.unpause', { uuid }))
        await to.call('vm.received', { uuid, paused, timeoutMs: RECEIVE_MS })
        await svc.db.transact((tx) => markMigrated(tx, svc, ref, dest))
      }),
    )
    await from.call('vm.stop', { uuid, clean: false }).catch((e: Error) => console.error(`VM ${uuid} migrated; its QEMU on the source stays: ${e.message}`))
    await recordMigration(svc, ref, source, dest)
  })
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

/** xapi's VM_MIGRATED message. */
function recordMigration(svc: Services, ref: string, source: string, dest: string): Promise<unknown> {
  const vm = svc.db.record('VM', ref)
  const host = (h: string) => `'${svc.db.record('host', h).name_label}' (uuid: ${svc.db.record('host', h).uuid})`
  return svc.db.transact((tx) =>
    tx.create('message', { name: 'VM_MIGRATED', priority: 5, cls: 'VM', obj_uuid: vm.uuid, timestamp: now(), body: `VM '${vm.name_label}' (uuid: ${vm.uuid}) migrated from host ${host(source)} to host ${host(dest)}` }),
  )
}
