// VDI.pool_migrate: a VM's disk moves to another SR (reference/pools-migration-ha.md §2.5). A
// running VM's disk is mirrored inside its own QEMU and the device switched onto the copy
// (qemu-lab §7): unlike xapi, which migrates the whole VM to the same host for it and so needs
// its memory free a second time (xen-api#4955), nothing but the disk is copied. A halted VM's
// disk is copied. The disk's snapshots come along as copies (disk-motion.ts). A disk going to an
// SR its VM's host does not see takes the VM along to a host that does (storage motion).
import { XapiError } from '../idl/errors.js'
import { register, type CallContext, type Services } from './context.js'
import { moveDisk } from './disk-motion.js'
import type { VMRecord } from '../idl/records.js'
import { hostSeeingSrs, vmHost } from './forwarding.js'
import { srsOfVm } from './storage.js'
import { migrateLive } from './vm-migrate.js'
import { withVmOperation } from './vm.js'

/** A disk copy that copies nothing for this long is given up (a target SR on a silent network server). */
const STALL_MS = 30_000

register('VDI.pool_migrate', (ctx, [vdi, sr]) => poolMigrateVdi(ctx, vdi, sr))

/** Whether `host` has SR `srRef` plugged. */
const sees = (svc: Services, host: string, srRef: string) => svc.db.record('SR', srRef).PBDs.some((p) => svc.db.record('PBD', p).host === host && svc.db.record('PBD', p).currently_attached)

/**
 * A running VM's disk moved to an SR its host does not see: the VM goes live with it to a host
 * that sees that SR and the VM's other SRs (storage motion), as xapi chooses another host for it.
 */
async function moveWithVm(ctx: CallContext, vmRef: string, vm: Readonly<VMRecord>, vdiRef: string, srRef: string): Promise<string> {
  const svc = ctx.svc
  const vbd = svc.db.record('VDI', vdiRef).VBDs.find((v) => svc.db.record('VBD', v).VM === vmRef)!
  const others = srsOfVm(svc, vm).filter((sr) => sr !== svc.db.record('VDI', vdiRef).SR)
  await migrateLive(ctx, vmRef, vm, hostSeeingSrs(svc, [srRef, ...others]), { moves: new Map([[vdiRef, srRef]]) })
  return svc.db.record('VBD', vbd).VDI
}

/** xapi's refusals of a VDI.pool_migrate before anything moves; the VM whose disk it is. */
export function vmOfMovedVdi(svc: Services, vdiRef: string, srRef: string): string {
  const vdi = svc.db.record('VDI', vdiRef)
  svc.db.record('SR', srRef)
  if (vdi.type === 'cbt_metadata') throw new XapiError('VDI_INCOMPATIBLE_TYPE', [vdiRef, 'cbt_metadata'])
  if (vdi.cbt_enabled) throw new XapiError('VDI_CBT_ENABLED', [vdiRef])
  const vbd = vdi.VBDs[0]
  if (vbd === undefined) throw new XapiError('VDI_NEEDS_VM_FOR_MIGRATE', [vdiRef])
  return svc.db.record('VBD', vbd).VM
}

async function poolMigrateVdi(ctx: CallContext, vdiRef: string, srRef: string): Promise<string> {
  const svc = ctx.svc
  const vmRef = vmOfMovedVdi(svc, vdiRef, srRef)
  return withVmOperation(ctx, vmRef, 'migrate_send', async (vm) => {
    const vdi = svc.db.record('VDI', vdiRef)
    if (vdi.SR === srRef) return vdiRef
    const live = vm.power_state === 'Running' || vm.power_state === 'Paused'
    const started = Date.now()
    const host = live ? vmHost(svc, vm) : undefined
    const moved = host === undefined || sees(svc, host, srRef) ? await moveDisk(ctx, vdiRef, srRef, host === undefined ? undefined : { host, uuid: vm.uuid, stallMs: STALL_MS }) : await moveWithVm(ctx, vmRef, vm, vdiRef, srRef)
    console.log(`VDI ${vdi.uuid} of VM ${vm.uuid} moved ${live ? 'live ' : ''}to SR ${svc.db.record('SR', srRef).uuid} in ${Date.now() - started} ms`)
    return moved
  })
}
