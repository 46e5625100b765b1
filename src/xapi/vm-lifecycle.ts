// VM power operations: xapi's checks and bookkeeping here, the QEMU work in the host agent.
import { randomUUID } from 'node:crypto'
import { NULL_REF } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { VMRecord, VmOperations } from '../idl/records.js'
import type { Tx } from '../db/database.js'
import { withUndo } from '../lib/undo.js'
import type { StartByImage, StopReason, VdiRef } from '../agent/contract.js'
import { now, register, type CallContext, type Services } from './context.js'
import { collectAllGarbage, createSuspendVdi, destroyVdi, imageOf, srsOfVm, vdiFormat } from './storage.js'
import { withSrLocks } from './sr-locks.js'
import { refreshAllowedOperations, withVmOperation } from './vm.js'
import { nestedVirtStartError } from './vm-constraints.js'
import { hostUrl, vmHost } from './forwarding.js'
import { releaseHost, reserveHost, type Placement } from './vm-placement.js'
import { attachNetworksOn } from './network.js'

type Rec = Readonly<VMRecord>

function oemStrings(bios: Record<string, string>): string[] {
  return Object.entries(bios)
    .filter(([k]) => /^oem-\d+$/.test(k))
    .sort(([a], [b]) => Number(a.slice(4)) - Number(b.slice(4)))
    .map(([, v]) => v)
}

/**
 * What the agent of `host` needs to start a VM, decoded from its records: disks name their images,
 * whose files the agent finds. `moved` names the images on `host` of disks on their way there
 * (storage motion), by their VDIs.
 */
export function startRequest(svc: Services, vm: Rec, paused: boolean, host: string, moved: ReadonlyMap<string, VdiRef> = new Map()): StartByImage {
  const disks: StartByImage['disks'] = []
  for (const vbd of vm.VBDs) {
    const rec = svc.db.record('VBD', vbd)
    const empty = rec.empty || rec.VDI === NULL_REF
    const arriving = moved.get(rec.VDI)
    disks.push({
      userdevice: Number(rec.userdevice),
      ...(empty ? {} : { image: arriving ?? imageOf(svc, rec.VDI, host) }),
      format: empty ? 'qcow2' : (arriving?.format ?? vdiFormat(svc, rec.VDI)),
      readOnly: rec.mode === 'RO',
      type: rec.type === 'CD' ? 'CD' : 'Disk',
      bootable: rec.bootable,
    })
  }
  const nics = vm.VIFs.map((vif) => {
    const rec = svc.db.record('VIF', vif)
    return { device: rec.device, mac: rec.MAC, network: svc.db.record('network', rec.network).uuid }
  })
  const boot = vm.HVM_boot_params
  const platform = vm.platform
  const nvram = vm.NVRAM['EFI-variables']
  return {
    uuid: vm.uuid,
    name: vm.name_label,
    memoryBytes: Number(vm.memory_static_max),
    vcpus: Number(vm.VCPUs_at_startup),
    maxVcpus: Number(vm.VCPUs_max),
    firmware: boot.firmware === 'uefi' ? 'uefi' : 'bios',
    secureBoot: platform.secureboot === 'true',
    platform,
    bootOrder: boot.order ?? 'cd',
    oemStrings: oemStrings(vm.bios_strings),
    haltOnReboot: vm.actions_after_reboot !== 'restart',
    disks,
    nics,
    ...(nvram ? { nvram } : {}),
    paused,
  }
}

/** Bookkeeping of a VM that now runs on `host`. */
function markRunning(tx: Tx, svc: Services, ref: string, paused: boolean, host: string): void {
  const vm = tx.get('VM', ref)
  tx.update('VM', ref, { power_state: paused ? 'Paused' : 'Running', resident_on: host, scheduled_to_be_resident_on: NULL_REF, domid: nextDomid(tx, host) })
  for (const vbd of vm.VBDs) tx.update('VBD', vbd, { currently_attached: true })
  for (const vif of vm.VIFs) tx.update('VIF', vif, { currently_attached: true })
  const metrics = vm.metrics
  if (tx.exists('VM_metrics', metrics)) tx.update('VM_metrics', metrics, { start_time: now(), VCPUs_number: vm.VCPUs_at_startup, memory_actual: vm.memory_static_max, state: [], last_updated: now() })
  createConsoles(tx, svc, ref, host)
  refreshAllowedOperations(tx, ref)
}

/** A running VM's consoles, served by the host it runs on. */
function createConsoles(tx: Tx, svc: Services, ref: string, host: string): void {
  for (const protocol of ['rfb', 'vt100'] as const) {
    const uuid = randomUUID()
    tx.create('console', { uuid, protocol, VM: ref, location: `${hostUrl(svc, host)}/console?uuid=${uuid}`, other_config: {} })
  }
}

/** Bookkeeping of a VM that a live migration moved to `host`: it runs there now, its devices still attached. */
export function markMigrated(tx: Tx, svc: Services, ref: string, host: string): void {
  const vm = tx.get('VM', ref)
  tx.update('VM', ref, { resident_on: host, scheduled_to_be_resident_on: NULL_REF, domid: nextDomid(tx, host) })
  for (const console of vm.consoles) tx.delete('console', console)
  createConsoles(tx, svc, ref, host)
  refreshAllowedOperations(tx, ref)
}

function nextDomid(tx: Tx, host: string): number {
  const used = tx.get('host', host).resident_VMs.map((v) => Number(tx.get('VM', v).domid))
  return Math.max(0, ...used) + 1
}

/** Bookkeeping of a VM that stopped: xapi's side effects of reaching Halted. */
export function markHalted(tx: Tx, ref: string, nvram?: string): void {
  const vm = tx.get('VM', ref)
  tx.update('VM', ref, {
    power_state: 'Halted',
    resident_on: NULL_REF,
    scheduled_to_be_resident_on: NULL_REF,
    domid: -1,
    requires_reboot: false,
    ...(nvram ? { NVRAM: { ...vm.NVRAM, 'EFI-variables': nvram } } : {}),
  })
  for (const vbd of vm.VBDs) tx.update('VBD', vbd, { currently_attached: false })
  for (const vif of vm.VIFs) tx.update('VIF', vif, { currently_attached: false })
  for (const console of vm.consoles) tx.delete('console', console)
  refreshAllowedOperations(tx, ref)
}

export const networksOf = (svc: Services, vm: Rec) => vm.VIFs.map((vif) => String(svc.db.record('VIF', vif).network))

async function startVm(ctx: CallContext, ref: string, paused: boolean, placement: Placement = 'choose'): Promise<void> {
  const svc = ctx.svc
  await withVmOperation(ctx, ref, 'start', async (vm) => {
    await withUndo('VM.start', async (undo) => {
      // An in-place restart is reported by this host's agent: the VM ran here.
      const host = await undo.step(`the reservation of ${vm.uuid} on a host`, () => reserveHost(svc, ref, placement, svc.hostRef), () => releaseHost(svc, ref))
      const nested = nestedVirtStartError(vm)
      if (nested) throw nested
      const agent = svc.agentFor(host)
      await attachNetworksOn(svc, networksOf(svc, vm), host)
      await undo.step(`the QEMU of ${vm.uuid}`, () => withSrLocks(srsOfVm(svc, vm), async () => agent.call('vm.start', startRequest(svc, vm, paused, host))), () => hardStop(svc, vm, host))
      await svc.db.transact((tx) => markRunning(tx, svc, ref, paused, host))
    })
  })
}

/** Undoes a start whose bookkeeping failed: the QEMU on `host` goes again. */
const hardStop = (svc: Services, vm: Rec, host: string) => svc.agentFor(host).call('vm.stop', { uuid: vm.uuid, clean: false })

async function stopVm(ctx: CallContext, ref: string, op: VmOperations, clean: boolean): Promise<void> {
  await withVmOperation(ctx, ref, op, async (vm) => {
    if (vm.power_state === 'Suspended') return discardSuspendImage(ctx.svc, ref)
    const { nvram } = await ctx.svc.agentFor(vmHost(ctx.svc, vm)).call('vm.stop', { uuid: vm.uuid, clean })
    await ctx.svc.db.transact((tx) => markHalted(tx, ref, nvram))
  })
  collectAllGarbage(ctx.svc)
}

/** A Suspended VM shut down: its saved state is dropped. */
async function discardSuspendImage(svc: Services, ref: string): Promise<void> {
  const image = svc.db.record('VM', ref).suspend_VDI
  await svc.db.transact((tx) => {
    markHalted(tx, ref)
    tx.update('VM', ref, { suspend_VDI: NULL_REF })
  })
  if (image !== NULL_REF && svc.db.tryRecord('VDI', image)) await destroyVdi(svc, image)
}

register('VM.suspend', (ctx, [ref]) =>
  withVmOperation(ctx, ref, 'suspend', (vm) =>
    withUndo('VM.suspend', async (undo) => {
      const host = vmHost(ctx.svc, vm)
      const image = await undo.step('the suspend image', () => createSuspendVdi(ctx.svc, vm, host), (made) => destroyVdi(ctx.svc, made.ref))
      const { nvram } = await ctx.svc.agentFor(host).call('vm.suspend', { uuid: vm.uuid, statePath: image.path })
      await ctx.svc.db.transact((tx) => {
        markHalted(tx, ref, nvram)
        tx.update('VM', ref, { power_state: 'Suspended', suspend_VDI: image.ref })
        // While Suspended the VM keeps its disks.
        for (const vbd of tx.get('VM', ref).VBDs) tx.update('VBD', vbd, { currently_attached: true })
        refreshAllowedOperations(tx, ref)
      })
    }),
  ),
)

async function resumeVm(ctx: CallContext, ref: string, paused: boolean, placement: Placement = 'choose'): Promise<void> {
  const svc = ctx.svc
  await withVmOperation(ctx, ref, 'resume', async (vm) => {
    const image = vm.suspend_VDI
    await withUndo('VM.resume', async (undo) => {
      const host = await undo.step(`the reservation of ${vm.uuid} on a host`, () => reserveHost(svc, ref, placement, svc.hostRef), () => releaseHost(svc, ref))
      if (image === NULL_REF) throw new XapiError('VM_HAS_NO_SUSPEND_VDI', [ref])
      const agent = svc.agentFor(host)
      await attachNetworksOn(svc, networksOf(svc, vm), host)
      await undo.step(`the QEMU of ${vm.uuid}`, () => withSrLocks(srsOfVm(svc, vm), async () => agent.call('vm.resume', { request: startRequest(svc, vm, paused, host), state: imageOf(svc, image, host) })), () => hardStop(svc, vm, host))
      await svc.db.transact((tx) => {
        markRunning(tx, svc, ref, paused, host)
        tx.update('VM', ref, { suspend_VDI: NULL_REF })
      })
    })
    await destroyVdi(svc, image).catch((e: Error) => console.error(`dropping the suspend image of ${vm.uuid}: ${e.message}`))
  })
}

register('VM.resume', (ctx, [ref, paused]) => resumeVm(ctx, ref, Boolean(paused)))

register('VM.resume_on', (ctx, [ref, host, paused]) => resumeVm(ctx, ref, Boolean(paused), { on: host }))

register('VM.start', (ctx, [ref, paused]) => startVm(ctx, ref, Boolean(paused)))

register('VM.start_on', (ctx, [ref, host, paused]) => startVm(ctx, ref, Boolean(paused), { on: host }))

register('VM.clean_shutdown', (ctx, [ref]) => stopVm(ctx, ref, 'clean_shutdown', true))
register('VM.hard_shutdown', (ctx, [ref]) => stopVm(ctx, ref, 'hard_shutdown', false))
register('VM.shutdown', (ctx, [ref]) => stopVm(ctx, ref, 'shutdown', true).catch(() => stopVm(ctx, ref, 'hard_shutdown', false)))

register('VM.clean_reboot', (ctx, [ref]) =>
  withVmOperation(ctx, ref, 'clean_reboot', async (vm) => {
    // The VM comes back on the host it ran on.
    const host = vmHost(ctx.svc, vm)
    const agent = ctx.svc.agentFor(host)
    const { nvram } = await agent.call('vm.stop', { uuid: vm.uuid, clean: true })
    await ctx.svc.db.transact((tx) => markHalted(tx, ref, nvram))
    const fresh = ctx.svc.db.record('VM', ref)
    await agent.call('vm.start', startRequest(ctx.svc, fresh, false, host))
    await ctx.svc.db.transact((tx) => markRunning(tx, ctx.svc, ref, false, host))
  }),
)

register('VM.hard_reboot', (ctx, [ref]) =>
  withVmOperation(ctx, ref, 'hard_reboot', async (vm) => {
    await ctx.svc.agentFor(vmHost(ctx.svc, vm)).call('vm.reset', { uuid: vm.uuid })
    await ctx.svc.db.transact((tx) => {
      const metrics = tx.get('VM', ref).metrics
      if (tx.exists('VM_metrics', metrics)) tx.update('VM_metrics', metrics, { start_time: now() })
      tx.update('VM', ref, { power_state: 'Running' })
    })
  }),
)

register('VM.pause', (ctx, [ref]) =>
  withVmOperation(ctx, ref, 'pause', async (vm) => {
    await ctx.svc.agentFor(vmHost(ctx.svc, vm)).call('vm.pause', { uuid: vm.uuid })
    await ctx.svc.db.transact((tx) => tx.update('VM', ref, { power_state: 'Paused' }))
  }),
)

register('VM.unpause', (ctx, [ref]) =>
  withVmOperation(ctx, ref, 'unpause', async (vm) => {
    await ctx.svc.agentFor(vmHost(ctx.svc, vm)).call('vm.unpause', { uuid: vm.uuid })
    await ctx.svc.db.transact((tx) => tx.update('VM', ref, { power_state: 'Running' }))
  }),
)

register('VM.power_state_reset', (ctx, [ref]) =>
  ctx.svc.db.transact((tx) => {
    const vm = tx.get('VM', ref)
    if (vm.resident_on === ctx.svc.hostRef && vm.power_state !== 'Halted') throw new XapiError('VM_BAD_POWER_STATE', [ref, 'halted', vm.power_state.toLowerCase()])
    markHalted(tx, ref)
  }),
)

/** A VM stopped on its own (guest poweroff, crash, QEMU death): follow its actions_after_*. */
export async function vmStoppedOnItsOwn(svc: Services, uuid: string, reason: StopReason, nvram?: string): Promise<void> {
  const ref = svc.db.replica.refByUuid('VM', uuid)
  // A VM that does not live here stopped: a live migration's destination that failed, not the VM.
  if (!ref || svc.db.record('VM', ref).resident_on !== svc.hostRef) return
  await svc.db.transact((tx) => markHalted(tx, ref, nvram))
  collectAllGarbage(svc)
  const vm = svc.db.record('VM', ref)
  const actions: Record<typeof reason, string> = { shutdown: vm.actions_after_shutdown, reboot: vm.actions_after_reboot, crash: vm.actions_after_crash, killed: 'destroy' }
  const action = actions[reason]
  if (action === 'restart' || action === 'rename_restart' || action === 'coredump_and_restart') {
    await startVm({ svc, sessionRef: '', session: {}, wireName: 'restart' }, ref, false, 'in-place').catch((e: Error) => console.error(`restarting VM ${uuid}: ${e.message}`))
  }
}

/** After a daemon restart: this host's VMs whose QEMU still runs stay Running; the others are Halted; auto_poweron VMs start. */
export async function reconcileVms(svc: Services): Promise<void> {
  const mine = [...svc.db.rows('VM')].filter((r) => r.stored.resident_on === svc.hostRef && !r.stored.is_control_domain && r.stored.power_state !== 'Halted' && r.stored.power_state !== 'Suspended')
  const list = mine.map((r) => ({ uuid: r.stored.uuid, devices: svc.db.record('VM', r.ref).VIFs.map((v) => svc.db.record('VIF', v).device) }))
  const alive = new Set(await svc.agentFor(svc.hostRef).call('vm.reattach', { vms: list }))
  for (const row of mine) if (!alive.has(row.stored.uuid)) await svc.db.transact((tx) => markHalted(tx, row.ref))
  for (const row of [...svc.db.rows('VM')]) {
    const s = row.stored
    if (s.power_state === 'Halted' && !s.is_a_template && s.other_config.auto_poweron === 'true') {
      await startVm({ svc, sessionRef: '', session: {}, wireName: 'auto_poweron' }, row.ref, false).catch((e: Error) => console.error(`auto_poweron of ${s.uuid}: ${e.message}`))
    }
  }
}

/** QEMU paused a VM on a failed disk write: it is Paused, with a message saying why, until someone makes room and unpauses it. */
export async function vmPausedOnIoError(svc: Services, uuid: string, device: string, noSpace: boolean): Promise<void> {
  const ref = svc.db.replica.refByUuid('VM', uuid)
  if (!ref) return
  await svc.db.transact((tx) => {
    tx.update('VM', ref, { power_state: 'Paused' })
    refreshAllowedOperations(tx, ref)
    tx.create('message', {
      name: noSpace ? 'VM_PAUSED_SR_FULL' : 'VM_PAUSED_IO_ERROR',
      priority: 2,
      cls: 'VM',
      obj_uuid: uuid,
      timestamp: now(),
      body: noSpace ? `The VM was paused: its disk ${device} needs more space than its SR has. Free space in the SR, then unpause the VM.` : `The VM was paused after a write error on its disk ${device}.`,
    })
  })
}
