// What the agent asks QEMU for: a VM's hardware, as plain data. The argv builder turns it into
// a command line (a pure function), so the agent decides and qemu/ only translates.

export type DiskBus = 'virtio' | 'ahci' | 'ide' | 'nvme'
export type NicModel = 'virtio' | 'e1000' | 'rtl8139'

export interface QemuDisk {
  /** Stable -blockdev node name for the format node (e.g. "d0"); the file node is `${node}f`. */
  node: string
  /** XenAPI userdevice: the guest sees disks in this order. */
  userdevice: number
  /** Absent for an empty CD drive. */
  path?: string
  format: 'qcow2' | 'raw'
  readOnly: boolean
  media: 'disk' | 'cdrom'
  bus: DiskBus
  /** Lower boots first; absent = not a boot device. */
  bootIndex?: number
  /** q35: the spare root port (hp<N>) it was hot-plugged into, so a migration destination matches. */
  hotplugPort?: number
}

export interface QemuNic {
  /** Device id (e.g. "n0"). */
  id: string
  mac: string
  /** The host tap interface this NIC uses (already created and attached to a bridge). */
  tap: string
  model: NicModel
  bootIndex?: number
  /** q35: the spare root port (hp<N>) it was hot-plugged into, so a migration destination matches. */
  hotplugPort?: number
}

export interface QemuVmConfig {
  uuid: string
  name: string
  accel: 'kvm' | 'tcg'
  machine: 'q35' | 'pc'
  firmware: 'bios' | 'uefi'
  secureBoot: boolean
  /** UEFI: the read-only firmware code and this VM's writable variable store. */
  ovmfCode?: string
  nvram?: string
  memoryMiB: number
  vcpus: number
  maxVcpus: number
  disks: QemuDisk[]
  nics: QemuNic[]
  /** Directory for qmp.sock, vnc.sock, serial.sock, qemu.pid and serial.log (short path: sockets ≤ 107 bytes). */
  runDir: string
  /** SMBIOS type 11 OEM strings (the test guest reads its per-VM switches there). */
  oemStrings: string[]
  /** Spare PCIe root ports for hot-plug (q35). */
  hotplugPorts: number
  vga: 'std' | 'virtio' | 'none'
  /** Start with the vCPUs stopped (start_paused, or before an incoming migration/resume). */
  paused: boolean
  /** Wait for an incoming migration stream (resume of a suspended VM, live migration). */
  incoming?: boolean
  /** What a guest-initiated reboot does: reset in place (QEMU's default), or end the process. */
  onReboot?: 'reset' | 'shutdown'
}
