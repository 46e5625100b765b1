// From a VM as the API describes it to the hardware QEMU is asked for: a pure decision
// (buses, boot order, firmware files, node names), tested without QEMU.
import { join } from 'node:path'
import type { DiskBus, NicModel, QemuDisk, QemuNic, QemuVmConfig } from '../qemu/config.js'
import type { StartRequest } from './contract.js'

/** A VM to start as the agent decides its hardware: the API layer's request, NICs with their taps. */
export type VmSpec = Omit<StartRequest, 'nics' | 'nvram' | 'paused'> & { nics: { device: string; mac: string; tap: string }[] }

export interface HostHardware {
  accel: 'kvm' | 'tcg'
  runDir: string
  ovmfDir: string
}

const DISK_BUSES: DiskBus[] = ['virtio', 'ahci', 'ide', 'nvme']
const NIC_MODELS: NicModel[] = ['virtio', 'e1000', 'rtl8139']

export const vmRunDir = (runRoot: string, uuid: string) => join(runRoot, uuid.replace(/-/g, '').slice(0, 12))

/** The block node of a VM's disk, named after its userdevice. */
export const diskNode = (userdevice: number): string => `d${userdevice}`

export function hardwareFor(spec: VmSpec, host: HostHardware): QemuVmConfig {
  const machine = spec.platform.machine === 'pc' ? 'pc' : 'q35'
  const wantedBus = spec.platform['disk-bus'] as DiskBus
  const diskBus: DiskBus = DISK_BUSES.includes(wantedBus) ? wantedBus : 'virtio'
  const wantedModel = spec.platform['nic-model'] as NicModel
  const nicModel: NicModel = NIC_MODELS.includes(wantedModel) ? wantedModel : 'virtio'
  const cdBus: DiskBus = machine === 'q35' ? 'ahci' : 'ide'
  const sorted = [...spec.disks].sort((a, b) => a.userdevice - b.userdevice)
  const disks: QemuDisk[] = sorted.map((d) => ({
    node: diskNode(d.userdevice),
    userdevice: d.userdevice,
    ...(d.path ? { path: d.path } : {}),
    format: d.format,
    readOnly: d.readOnly || d.type === 'CD',
    media: d.type === 'CD' ? 'cdrom' : 'disk',
    bus: d.type === 'CD' ? cdBus : diskBus === 'ahci' && machine === 'pc' ? 'ide' : diskBus,
  }))
  const nics: QemuNic[] = [...spec.nics].sort((a, b) => Number(a.device) - Number(b.device)).map((n) => ({ id: `n${n.device}`, mac: n.mac, tap: n.tap, model: nicModel }))
  let next = 1
  for (const letter of spec.bootOrder.toLowerCase() || 'cd') {
    if (letter === 'c') for (const d of disks.filter((d) => d.media === 'disk').sort((a, b) => Number(bootableFirst(sorted, b)) - Number(bootableFirst(sorted, a)))) d.bootIndex ??= next++
    if (letter === 'd') for (const d of disks.filter((d) => d.media === 'cdrom')) d.bootIndex ??= next++
    if (letter === 'n') for (const n of nics) n.bootIndex ??= next++
  }
  const runDir = vmRunDir(host.runDir, spec.uuid)
  const uefi = spec.firmware === 'uefi'
  return {
    uuid: spec.uuid,
    name: spec.name,
    accel: host.accel,
    machine,
    firmware: uefi ? 'uefi' : 'bios',
    secureBoot: uefi && spec.secureBoot,
    ...(uefi ? { ovmfCode: join(host.ovmfDir, spec.secureBoot ? 'OVMF_CODE_4M.secboot.fd' : 'OVMF_CODE_4M.fd'), nvram: join(runDir, 'nvram.fd') } : {}),
    memoryMiB: Math.max(16, Math.floor(spec.memoryBytes / 2 ** 20)),
    vcpus: Math.max(1, spec.vcpus),
    maxVcpus: Math.max(spec.vcpus, spec.maxVcpus, 1),
    disks,
    nics,
    runDir,
    oemStrings: spec.oemStrings,
    hotplugPorts: machine === 'q35' ? 4 : 0,
    vga: spec.platform.vga === 'none' ? 'none' : 'std',
    paused: false,
    ...(spec.haltOnReboot ? { onReboot: 'shutdown' as const } : {}),
  }
}

function bootableFirst(all: VmSpec['disks'], d: QemuDisk): boolean {
  return all.find((x) => x.userdevice === d.userdevice)?.bootable ?? false
}
