// VM shapes shared by the argv golden tests and the real-QEMU integration tests: the same
// configs, with host paths and tap names supplied by the caller.
import type { QemuVmConfig } from '../../src/qemu/config.js'

export interface ShapeHost {
  /** Parent of each VM's run directory. */
  runRoot: string
  /** Where disk images, ISOs and NVRAM files live. */
  dataRoot: string
  /** Two tap interfaces the NICs use. */
  taps: [string, string]
}

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'
export const OVMF_CODE_SECBOOT = '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd'
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd'

const base = (host: ShapeHost, name: string, uuid: string): QemuVmConfig => ({
  uuid,
  name,
  accel: 'tcg',
  machine: 'q35',
  firmware: 'bios',
  secureBoot: false,
  memoryMiB: 256,
  vcpus: 1,
  maxVcpus: 1,
  disks: [],
  nics: [],
  runDir: `${host.runRoot}/${name}`,
  oemStrings: [],
  hotplugPorts: 0,
  vga: 'std',
  paused: false,
})

export function qemuShapes(host: ShapeHost): Record<string, QemuVmConfig> {
  const data = (file: string) => `${host.dataRoot}/${file}`
  const [tap0, tap1] = host.taps
  return {
    'bios-virtio-linux': {
      ...base(host, 'bios-virtio-linux', '6f1b8a2e-0c4d-4b7a-9e51-3d2f7a8c1e01'),
      vcpus: 2,
      maxVcpus: 4,
      memoryMiB: 512,
      hotplugPorts: 2,
      // Listed out of order on purpose: the guest must see userdevice order.
      disks: [
        { node: 'cd0', userdevice: 3, path: data('install, v1.iso'), format: 'raw', readOnly: true, media: 'cdrom', bus: 'ahci' },
        { node: 'd1', userdevice: 1, path: data('data.qcow2'), format: 'qcow2', readOnly: false, media: 'disk', bus: 'virtio' },
        { node: 'd0', userdevice: 0, path: data('root.qcow2'), format: 'qcow2', readOnly: false, media: 'disk', bus: 'virtio', bootIndex: 1 },
      ],
      nics: [
        { id: 'n0', mac: '0e:11:22:33:44:01', tap: tap0, model: 'virtio' },
        { id: 'n1', mac: '0e:11:22:33:44:02', tap: tap1, model: 'virtio' },
      ],
      oemStrings: ['flotilla:vm=bios-virtio-linux', 'qlab.note=a,b'],
    },
    'uefi-secureboot': {
      ...base(host, 'uefi-secureboot', '6f1b8a2e-0c4d-4b7a-9e51-3d2f7a8c1e02'),
      accel: 'kvm',
      firmware: 'uefi',
      secureBoot: true,
      ovmfCode: OVMF_CODE_SECBOOT,
      nvram: data('uefi-secureboot.vars'),
      vga: 'virtio',
      disks: [{ node: 'd0', userdevice: 0, path: data('uki.qcow2'), format: 'qcow2', readOnly: false, media: 'disk', bus: 'virtio', bootIndex: 1 }],
      nics: [{ id: 'n0', mac: '0e:11:22:33:44:03', tap: tap0, model: 'virtio' }],
    },
    'windows-ahci': {
      ...base(host, 'windows-ahci', '6f1b8a2e-0c4d-4b7a-9e51-3d2f7a8c1e03'),
      firmware: 'uefi',
      ovmfCode: OVMF_CODE,
      nvram: data('windows-ahci.vars'),
      memoryMiB: 2048,
      vcpus: 2,
      maxVcpus: 2,
      hotplugPorts: 4,
      disks: [
        { node: 'd0', userdevice: 0, path: data('c.qcow2'), format: 'qcow2', readOnly: false, media: 'disk', bus: 'ahci', bootIndex: 2 },
        { node: 'cd0', userdevice: 3, path: data('win.iso'), format: 'raw', readOnly: true, media: 'cdrom', bus: 'ahci', bootIndex: 1 },
      ],
      nics: [{ id: 'n0', mac: '0e:11:22:33:44:04', tap: tap0, model: 'e1000' }],
    },
    'pc-ide': {
      ...base(host, 'pc-ide', '6f1b8a2e-0c4d-4b7a-9e51-3d2f7a8c1e04'),
      machine: 'pc',
      disks: [
        { node: 'd0', userdevice: 0, path: data('hda.raw'), format: 'raw', readOnly: false, media: 'disk', bus: 'ide', bootIndex: 1 },
        { node: 'd1', userdevice: 1, path: data('hdb.qcow2'), format: 'qcow2', readOnly: false, media: 'disk', bus: 'ide' },
        { node: 'cd0', userdevice: 3, path: data('tools.iso'), format: 'raw', readOnly: true, media: 'cdrom', bus: 'ide' },
      ],
      nics: [{ id: 'n0', mac: '0e:11:22:33:44:05', tap: tap0, model: 'rtl8139', bootIndex: 2 }],
    },
    'paused-incoming': {
      ...base(host, 'paused-incoming', '6f1b8a2e-0c4d-4b7a-9e51-3d2f7a8c1e05'),
      paused: true,
      incoming: true,
      vga: 'none',
      hotplugPorts: 2,
      disks: [
        { node: 'd0', userdevice: 0, path: data('migrating.qcow2'), format: 'qcow2', readOnly: false, media: 'disk', bus: 'virtio', bootIndex: 1 },
        { node: 'd1', userdevice: 1, path: data('hotplugged.qcow2'), format: 'qcow2', readOnly: false, media: 'disk', bus: 'nvme', hotplugPort: 0 },
      ],
      nics: [{ id: 'n0', mac: '0e:11:22:33:44:06', tap: tap1, model: 'virtio', hotplugPort: 1 }],
    },
    'empty-cd': {
      ...base(host, 'empty-cd', '6f1b8a2e-0c4d-4b7a-9e51-3d2f7a8c1e06'),
      vga: 'none',
      disks: [
        { node: 'd0', userdevice: 0, path: data('empty-cd-root.qcow2'), format: 'qcow2', readOnly: false, media: 'disk', bus: 'virtio', bootIndex: 2 },
        { node: 'cd0', userdevice: 3, format: 'raw', readOnly: true, media: 'cdrom', bus: 'ahci', bootIndex: 1 },
      ],
    },
  }
}
