// VBDs and VIFs: creation with xapi's checks, and plug/unplug/insert/eject that reach the
// running QEMU through the agent.
import { constructorArgs, NULL_REF } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { VMRecord } from '../idl/records.js'
import { withUndo } from '../lib/undo.js'
import { register, type CallContext } from './context.js'
import { imageOf, vdiFormat } from './storage.js'
import { vmHost } from './forwarding.js'
import { attachNetworksOn } from './network.js'
import { vbdDeviceName } from './vm-copies.js'

register('VBD.create', (ctx, [args]) =>
  ctx.svc.db.transact((tx) => {
    const given = args
    const vmRef = String(given.VM)
    const vm = tx.get('VM', vmRef)
    const type = given.type ?? 'Disk'
    const empty = Boolean(given.empty) || String(given.VDI ?? NULL_REF) === NULL_REF
    if (!empty) tx.get('VDI', String(given.VDI))
    else if (type !== 'CD') throw new XapiError('VDI_MISSING', [NULL_REF, NULL_REF])
    if (type === 'CD' && given.mode === 'RW') throw new XapiError('VBD_CDS_MUST_BE_READONLY')
    const used = new Set(vm.VBDs.map((v) => tx.get('VBD', v).userdevice))
    let userdevice = String(given.userdevice ?? 'autodetect')
    if (userdevice === 'autodetect') userdevice = String([...Array(16).keys()].find((i) => !used.has(String(i))) ?? '')
    if (!/^\d+$/.test(userdevice) || Number(userdevice) > 15) throw new XapiError('INVALID_DEVICE', [userdevice])
    if (used.has(userdevice)) throw new XapiError('DEVICE_ALREADY_EXISTS', [userdevice])
    return tx.create('VBD', {
      ...constructorArgs('VBD', given),
      type,
      empty,
      VDI: empty ? NULL_REF : String(given.VDI),
      mode: type === 'CD' ? 'RO' : (given.mode ?? 'RW'),
      userdevice,
      device: vbdDeviceName(userdevice),
      currently_attached: vm.power_state === 'Suspended' ? Boolean(given.currently_attached) : false,
    })
  }),
)

const running = (vm: Readonly<VMRecord>, ref: string) => {
  if (vm.power_state !== 'Running') throw new XapiError('VM_BAD_POWER_STATE', [ref, 'running', vm.power_state.toLowerCase()])
}

async function plugVbd(ctx: CallContext, ref: string): Promise<void> {
  const vbd = ctx.svc.db.record('VBD', ref)
  const vm = ctx.svc.db.record('VM', vbd.VM)
  running(vm, vbd.VM)
  if (vbd.currently_attached) throw new XapiError('DEVICE_ALREADY_ATTACHED', [ref])
  if (vbd.type === 'CD') throw new XapiError('OPERATION_NOT_ALLOWED', ['CD drives are attached when the VM starts; insert a medium with VBD.insert'])
  const host = vmHost(ctx.svc, vm)
  const agent = ctx.svc.agentFor(host)
  const disk = { userdevice: Number(vbd.userdevice), image: imageOf(ctx.svc, vbd.VDI, host), format: vdiFormat(ctx.svc, vbd.VDI), readOnly: vbd.mode === 'RO', type: 'Disk' as const, bootable: false }
  await withUndo('VBD.plug', async (undo) => {
    await undo.step(`disk ${disk.userdevice} of ${vm.uuid}`, () => agent.call('vm.plug-disk', { uuid: vm.uuid, platform: vm.platform, disk }), () => agent.call('vm.unplug-disk', { uuid: vm.uuid, userdevice: disk.userdevice }))
    await ctx.svc.db.transact((tx) => tx.update('VBD', ref, { currently_attached: true }))
  })
}

async function unplugVbd(ctx: CallContext, ref: string, force: boolean): Promise<void> {
  const vbd = ctx.svc.db.record('VBD', ref)
  const vm = ctx.svc.db.record('VM', vbd.VM)
  running(vm, vbd.VM)
  if (!vbd.currently_attached) throw new XapiError('DEVICE_ALREADY_DETACHED', [ref])
  if (vbd.type === 'CD' || (!vbd.unpluggable && !force)) throw new XapiError('VBD_NOT_UNPLUGGABLE', [ref])
  await ctx.svc.agentFor(vmHost(ctx.svc, vm)).call('vm.unplug-disk', { uuid: vm.uuid, userdevice: Number(vbd.userdevice) })
  await ctx.svc.db.transact((tx) => tx.update('VBD', ref, { currently_attached: false }))
}

register('VBD.plug', (ctx, [ref]) => plugVbd(ctx, ref))
register('VBD.unplug', (ctx, [ref]) => unplugVbd(ctx, ref, false))
register('VBD.unplug_force', (ctx, [ref]) => unplugVbd(ctx, ref, true))

register('VBD.insert', async (ctx, [ref, vdi]) => {
  const vbd = ctx.svc.db.record('VBD', ref)
  if (vbd.type !== 'CD') throw new XapiError('VBD_NOT_REMOVABLE_MEDIA', [ref])
  if (!vbd.empty) throw new XapiError('VBD_NOT_EMPTY', [ref])
  ctx.svc.db.record('VDI', vdi)
  const vm = ctx.svc.db.record('VM', vbd.VM)
  if (vm.power_state === 'Running' || vm.power_state === 'Paused') {
    const host = vmHost(ctx.svc, vm)
    await ctx.svc.agentFor(host).call('vm.insert-cd', { uuid: vm.uuid, userdevice: Number(vbd.userdevice), image: imageOf(ctx.svc, vdi, host), format: vdiFormat(ctx.svc, vdi) })
  }
  await ctx.svc.db.transact((tx) => tx.update('VBD', ref, { VDI: vdi, empty: false }))
})

register('VBD.eject', async (ctx, [ref]) => {
  const vbd = ctx.svc.db.record('VBD', ref)
  if (vbd.type !== 'CD') throw new XapiError('VBD_NOT_REMOVABLE_MEDIA', [ref])
  if (vbd.empty) throw new XapiError('VBD_IS_EMPTY', [ref])
  const vm = ctx.svc.db.record('VM', vbd.VM)
  if (vm.power_state === 'Running' || vm.power_state === 'Paused') await ctx.svc.agentFor(vmHost(ctx.svc, vm)).call('vm.eject-cd', { uuid: vm.uuid, userdevice: Number(vbd.userdevice) })
  await ctx.svc.db.transact((tx) => tx.update('VBD', ref, { VDI: NULL_REF, empty: true }))
})

for (const cls of ['VBD', 'VIF'] as const) {
  register(`${cls}.destroy`, (ctx, [ref]) =>
    ctx.svc.db.transact((tx) => {
      const dev = tx.get(cls, ref)
      const vm = tx.get('VM', dev.VM)
      if (dev.currently_attached && vm.power_state === 'Running') throw new XapiError('OPERATION_NOT_ALLOWED', [`${cls} ${String(ref)} is attached to a running VM; unplug it first`])
      tx.delete(cls, ref)
    }),
  )
}

async function plugVif(ctx: CallContext, ref: string): Promise<void> {
  const vif = ctx.svc.db.record('VIF', ref)
  const vm = ctx.svc.db.record('VM', vif.VM)
  running(vm, vif.VM)
  if (vif.currently_attached) throw new XapiError('DEVICE_ALREADY_ATTACHED', [ref])
  const nic = { device: vif.device, mac: vif.MAC, network: ctx.svc.db.record('network', vif.network).uuid }
  const agent = ctx.svc.agentFor(vmHost(ctx.svc, vm))
  await attachNetworksOn(ctx.svc, [vif.network], vmHost(ctx.svc, vm))
  await withUndo('VIF.plug', async (undo) => {
    await undo.step(`NIC ${nic.device} of ${vm.uuid}`, () => agent.call('vm.plug-nic', { uuid: vm.uuid, platform: vm.platform, nic }), () => agent.call('vm.unplug-nic', { uuid: vm.uuid, device: nic.device }))
    await ctx.svc.db.transact((tx) => tx.update('VIF', ref, { currently_attached: true }))
  })
}

async function unplugVif(ctx: CallContext, ref: string): Promise<void> {
  const vif = ctx.svc.db.record('VIF', ref)
  const vm = ctx.svc.db.record('VM', vif.VM)
  running(vm, vif.VM)
  if (!vif.currently_attached) throw new XapiError('DEVICE_ALREADY_DETACHED', [ref])
  await ctx.svc.agentFor(vmHost(ctx.svc, vm)).call('vm.unplug-nic', { uuid: vm.uuid, device: vif.device })
  await ctx.svc.db.transact((tx) => tx.update('VIF', ref, { currently_attached: false }))
}

register('VIF.plug', (ctx, [ref]) => plugVif(ctx, ref))
register('VIF.unplug', (ctx, [ref]) => unplugVif(ctx, ref))
register('VIF.unplug_force', (ctx, [ref]) => unplugVif(ctx, ref))
