// The templates Flotilla ships, and VM.provision. Linux shapes use virtio devices; Windows and
// "Other install media" use emulated devices (AHCI disks, e1000 NICs) that need no drivers.
import { randomUUID } from 'node:crypto'
import { NULL_REF } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { VdiImage } from '../agent/contract.js'
import { withUndo } from '../lib/undo.js'
import { now, register, type Services } from './context.js'
import { attachedSr, createVdi, destroyVdi, recordVdi } from './storage.js'
import { refreshAllowedOperations, withVmOperation } from './vm.js'
import { diskVbd } from './vm-copies.js'

export const TEST_GUEST_TEMPLATE = 'Flotilla test guest'
const GiB = 2 ** 30
const MiB = 2 ** 20

interface Shape {
  name: string
  label: string
  memory: number
  vcpus: number
  disk: number
  firmware: 'bios' | 'uefi'
  emulated: boolean
  distro?: string
}

const SHAPES: Shape[] = [
  { name: 'Other install media', label: 'other', memory: 1 * GiB, vcpus: 1, disk: 16 * GiB, firmware: 'bios', emulated: true },
  { name: 'Debian Bookworm 12', label: 'debian-12', memory: 2 * GiB, vcpus: 2, disk: 20 * GiB, firmware: 'bios', emulated: false, distro: 'debian' },
  { name: 'Ubuntu Jammy Jellyfish 22.04', label: 'ubuntu-22.04', memory: 2 * GiB, vcpus: 2, disk: 20 * GiB, firmware: 'bios', emulated: false, distro: 'ubuntu' },
  { name: 'Rocky Linux 9', label: 'rocky-9', memory: 2 * GiB, vcpus: 2, disk: 20 * GiB, firmware: 'uefi', emulated: false, distro: 'rhel' },
  { name: 'Windows 10 (64-bit)', label: 'windows-10', memory: 4 * GiB, vcpus: 2, disk: 32 * GiB, firmware: 'uefi', emulated: true },
  { name: 'Windows Server 2019 (64-bit)', label: 'windows-server-2019', memory: 4 * GiB, vcpus: 2, disk: 32 * GiB, firmware: 'uefi', emulated: true },
]

function recommendations(shape: Pick<Shape, 'firmware'>): string {
  const uefiOnly = shape.firmware === 'uefi'
  return `<restrictions><restriction field="memory-static-max" max="137438953472"/><restriction field="vcpus-max" max="32"/><restriction field="supports-bios" value="${uefiOnly ? 'no' : 'yes'}"/><restriction field="supports-uefi" value="yes"/><restriction field="supports-secure-boot" value="yes"/><restriction max="255" property="number-of-vbds"/><restriction max="7" property="number-of-vifs"/></restrictions>`
}

function templateFields(shape: Pick<Shape, 'name' | 'label' | 'memory' | 'vcpus' | 'firmware' | 'emulated'>, description: string, other: Record<string, string>) {
  return {
    name_label: shape.name,
    name_description: description,
    is_a_template: true,
    is_default_template: true,
    reference_label: shape.label,
    memory_static_max: shape.memory,
    memory_dynamic_max: shape.memory,
    memory_dynamic_min: shape.memory,
    memory_static_min: Math.min(shape.memory, 128 * MiB),
    memory_target: shape.memory,
    VCPUs_max: shape.vcpus,
    VCPUs_at_startup: shape.vcpus,
    actions_after_shutdown: 'destroy',
    actions_after_reboot: 'restart',
    actions_after_crash: 'restart',
    HVM_boot_policy: 'BIOS order',
    HVM_boot_params: { order: shape.emulated ? 'dc' : 'cd', firmware: shape.firmware },
    platform: { 'disk-bus': shape.emulated ? 'ahci' : 'virtio', 'nic-model': shape.emulated ? 'e1000' : 'virtio', acpi: '1', apic: 'true', pae: 'true' },
    domain_type: 'hvm',
    recommendations: recommendations(shape),
    other_config: { default_template: 'true', ...other },
    power_state: 'Halted',
    domid: -1,
  }
}

async function createTemplate(svc: Services, fields: Record<string, unknown>): Promise<string> {
  return svc.db.transact((tx) => {
    const metrics = tx.create('VM_metrics', {})
    const ref = tx.create('VM', { ...fields, metrics })
    refreshAllowedOperations(tx, ref)
    return ref
  })
}

const hasTemplate = (svc: Services, name: string) => [...svc.db.rows('VM')].some((r) => r.stored.is_a_template && r.stored.name_label === name)

/** Creates missing shipped templates. The test guest template needs the image set-up builds. */
export async function ensureTemplates(svc: Services, testGuestImage: string): Promise<void> {
  for (const shape of SHAPES) {
    if (hasTemplate(svc, shape.name)) continue
    const disks = `<provision><disk device="0" size="${shape.disk}" sr="" bootable="true" type="system"/></provision>`
    await createTemplate(svc, templateFields(shape, `Template for ${shape.name}`, { disks, ...(shape.distro ? { 'install-distro': shape.distro, linux_template: 'true' } : {}) }))
  }
  if (hasTemplate(svc, TEST_GUEST_TEMPLATE)) return
  const sr = svc.db.record('pool', svc.db.first('pool')).default_SR
  let image: VdiImage
  try {
    image = await svc.agentFor(svc.hostRef).call('vdi.import-file', { ...attachedSr(svc, sr, svc.hostRef), source: testGuestImage, format: 'raw', location: randomUUID() })
  } catch (err) {
    console.error(`flotilla: the "${TEST_GUEST_TEMPLATE}" template is not created: no usable image at ${testGuestImage} (scripts/build-test-guest.sh makes it): ${(err as Error).message}`)
    return
  }
  const vdi = await recordVdi(svc, sr, image, { name_label: `${TEST_GUEST_TEMPLATE} disk`, name_description: 'Boot disk of the test guest (BIOS and UEFI)', type: 'system' })
  const shape = { name: TEST_GUEST_TEMPLATE, label: 'flotilla-test-guest', memory: 256 * MiB, vcpus: 1, firmware: 'bios' as const, emulated: false }
  const ref = await createTemplate(svc, templateFields(shape, 'A tiny Debian kernel and busybox guest that prints a counter on its serial console', {}))
  await svc.db.transact((tx) =>
    tx.create('VBD', diskVbd(ref, vdi, '0', { bootable: true })),
  )
}

/** VDI types a provisioning spec may ask for; xapi makes any other a system disk. */
const PROVISION_TYPES = new Set(['system', 'user', 'ephemeral', 'suspend', 'crashdump'])

/** The disks of other_config:disks, as xe, XO and XenCenter write them. */
export function parseProvisionDisks(xml: string): { device: string; size: number; sr: string; bootable: boolean; type: string }[] {
  const disks = []
  for (const m of xml.matchAll(/<disk\b([^>]*)\/?>/g)) {
    const attrs = Object.fromEntries([...m[1]!.matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1]!, a[2]!]))
    const size = Number(attrs.size)
    if (!/^\d+$/.test(attrs.device ?? '') || !(size > 0)) throw new XapiError('INVALID_VALUE', ['other_config:disks', xml])
    disks.push({ device: attrs.device!, size, sr: attrs.sr ?? '', bootable: attrs.bootable === 'true', type: PROVISION_TYPES.has(attrs.type ?? '') ? attrs.type! : 'system' })
  }
  return disks
}

/** The other_config keys that mark a VM as still to be installed (xapi_templates.ml). */
const INSTALL_KEYS = ['disks', 'postinstall']

/**
 * VM.provision as xapi does it: the VM stops being a template (its install time), gets the disks
 * its spec asks for (all removed again if one fails), and loses the install keys. A post-install
 * script is not run: there is no control-domain installer to run it.
 */
register('VM.provision', (ctx, [ref]) =>
  withVmOperation(ctx, ref, 'provision', async (vm) => {
    await ctx.svc.db.transact((tx) => {
      tx.update('VM', ref, { is_a_template: false })
      const metrics = vm.metrics
      if (tx.exists('VM_metrics', metrics)) tx.update('VM_metrics', metrics, { install_time: now() })
    })
    const xml = vm.other_config.disks
    await withUndo('VM.provision', async (undo) => {
      for (const disk of xml ? parseProvisionDisks(xml) : []) {
        const sr = disk.sr ? ctx.svc.db.replica.refByUuid('SR', disk.sr) : NULL_REF
        if (sr === undefined) throw new XapiError('UUID_INVALID', ['sr', disk.sr])
        const vdi = await undo.step(
          `the disk ${disk.device}`,
          () => createVdi(ctx.svc, { SR: sr, virtual_size: disk.size, name_label: `${vm.name_label} ${disk.device}`, name_description: 'Created by template provisioner', type: disk.type, sm_config: { vmhint: vm.uuid } }),
          (made) => destroyVdi(ctx.svc, made),
        )
        await undo.step(
          `the VBD of disk ${disk.device}`,
          () =>
            ctx.svc.db.transact((tx) =>
              tx.create('VBD', diskVbd(ref, vdi, disk.device, { bootable: disk.bootable, unpluggable: disk.type !== 'system', other_config: { owner: '' } })),
            ),
          (vbd) => ctx.svc.db.transact((tx) => tx.exists('VBD', vbd) && tx.delete('VBD', vbd)),
        )
      }
    })
    await ctx.svc.db.transact((tx) => {
      const other = { ...tx.get('VM', ref).other_config }
      for (const key of INSTALL_KEYS) delete other[key]
      tx.update('VM', ref, { other_config: other })
    })
  }),
)
