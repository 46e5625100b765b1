// The qemu-system-x86_64 command line, built purely from a QemuVmConfig: no host state, no I/O,
// so the same config gives the same argv on a migration destination, and golden tests pin it.
import { isAbsolute, join } from 'node:path'
import type { QemuDisk, QemuNic, QemuVmConfig } from './config.js'
import { flatten, isNetworkImage, protocolNode } from './protocol.js'

/** AF_UNIX sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107
/** q35's built-in ICH9 AHCI controller has six ports (ide.0 … ide.5). */
const AHCI_PORTS = 6
/** pc's PIIX IDE: two buses with a master and a slave each. */
const IDE_SLOTS = 4
/** Without an IOMMU and x2APIC interrupt remapping, x86 guests address at most 255 CPUs. */
const MAX_VCPUS = 255
const FIRMWARE_CODE_NODE = 'fwcode'
const FIRMWARE_VARS_NODE = 'fwvars'

/** The files QEMU creates in a VM's run directory. */
export interface RunPaths {
  qmp: string
  vnc: string
  serialSocket: string
  serialLog: string
  pidfile: string
  /** QEMU's own stdout/stderr (written by the launcher, not by an argv option). */
  log: string
}

export function runPaths(runDir: string): RunPaths {
  return {
    qmp: join(runDir, 'qmp.sock'),
    vnc: join(runDir, 'vnc.sock'),
    serialSocket: join(runDir, 'serial.sock'),
    serialLog: join(runDir, 'serial.log'),
    pidfile: join(runDir, 'qemu.pid'),
    log: join(runDir, 'qemu.log'),
  }
}

/** qdev ids, so that QMP callers (eject, device_del, stats) name devices the way argv did. */
export const diskDeviceId = (disk: Pick<QemuDisk, 'node'>): string => `${disk.node}-dev`
export const fileNodeName = (disk: Pick<QemuDisk, 'node'>): string => `${disk.node}f`
export const netdevId = (nic: Pick<QemuNic, 'id'>): string => `${nic.id}-tap`
export const hotplugPortId = (index: number): string => `hp${index}`

export function qemuArgv(config: QemuVmConfig): string[] {
  validateConfig(config)
  const paths = runPaths(config.runDir)
  return [
    '-nodefaults', '-no-user-config',
    '-name', props(undefined, { guest: config.name, 'debug-threads': 'on' }),
    '-uuid', config.uuid,
    '-msg', 'timestamp=on',
    ...machineArgs(config),
    ...firmwareArgs(config),
    ...displayArgs(config, paths),
    ...hotplugPortArgs(config),
    ...diskArgs(config),
    ...nicArgs(config),
    ...serialArgs(paths),
    ...smbiosArgs(config),
    ...controlArgs(config, paths),
  ]
}

type Props = Record<string, string | number | undefined>

/** QemuOpts syntax: a literal comma inside a value is written twice. */
const escapeOpt = (value: string): string => value.replaceAll(',', ',,')

function props(head: string | undefined, values: Props): string {
  const parts = head === undefined ? [] : [head]
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined) parts.push(`${key}=${escapeOpt(String(value))}`)
  }
  return parts.join(',')
}

const onOff = (flag: boolean): string => (flag ? 'on' : 'off')

function machineArgs(config: QemuVmConfig): string[] {
  const uefi = config.firmware === 'uefi'
  const machine = props(config.machine, {
    accel: config.accel,
    smm: config.secureBoot ? 'on' : undefined,
    pflash0: uefi ? FIRMWARE_CODE_NODE : undefined,
    pflash1: uefi ? FIRMWARE_VARS_NODE : undefined,
  })
  return [
    '-machine', machine,
    // `host` passes the real CPU through; TCG emulates everything, so offer all it can.
    '-cpu', config.accel === 'kvm' ? 'host' : 'max',
    '-m', String(config.memoryMiB),
    '-smp', props(String(config.vcpus), { maxcpus: config.maxVcpus }),
  ]
}

function firmwareArgs(config: QemuVmConfig): string[] {
  if (config.firmware !== 'uefi') return []
  const args = [
    ...blockNodes(FIRMWARE_CODE_NODE, config.ovmfCode!, 'raw', true),
    ...blockNodes(FIRMWARE_VARS_NODE, config.nvram!, 'raw', false),
  ]
  // Secure Boot firmware keeps its variable store writable only from SMM.
  if (config.secureBoot) args.push('-global', 'driver=cfi.pflash01,property=secure,value=on')
  return args
}

/**
 * A file node plus a format node. Page-cache I/O (no O_DIRECT, thread pool) works on every
 * local filesystem, tmpfs and FUSE included, and guest flushes still reach the disk. Writable
 * images pass discards (and zero writes) down so thin qcow2 files stay thin.
 */
function blockNodes(node: string, path: string, format: QemuDisk['format'], readOnly: boolean): string[] {
  const thin = readOnly ? {} : { discard: 'unmap' }
  const { where, tuning } = protocolNode(path)
  const file = props(undefined, {
    ...flatten(where), 'node-name': fileNodeName({ node }), 'read-only': onOff(readOnly),
    ...flatten(tuning), ...thin,
  })
  const formatNode = props(undefined, {
    driver: format, 'node-name': node, file: fileNodeName({ node }), 'read-only': onOff(readOnly),
    ...thin, 'detect-zeroes': readOnly ? undefined : 'unmap',
  })
  return ['-blockdev', file, '-blockdev', formatNode]
}

function displayArgs(config: QemuVmConfig, paths: RunPaths): string[] {
  const none = ['-display', 'none']
  if (config.vga === 'none') return none
  return [
    ...none,
    '-device', props(config.vga === 'virtio' ? 'virtio-vga' : 'VGA', { id: 'video0' }),
    '-vnc', `unix:${escapeOpt(paths.vnc)}`,
    // An absolute pointer, so the VNC cursor and the guest's agree.
    '-usb', '-device', props('usb-tablet', { id: 'tablet0' }),
  ]
}

function hotplugPortArgs(config: QemuVmConfig): string[] {
  const args: string[] = []
  for (let i = 0; i < config.hotplugPorts; i++) {
    args.push('-device', props('pcie-root-port', { id: hotplugPortId(i), bus: 'pcie.0', chassis: i + 1, slot: i + 1 }))
  }
  return args
}

const byUserdevice = (a: QemuDisk, b: QemuDisk): number => a.userdevice - b.userdevice

function diskArgs(config: QemuVmConfig): string[] {
  const args: string[] = []
  const nextSlot = { ahci: 0, ide: 0 }
  for (const disk of [...config.disks].sort(byUserdevice)) {
    if (disk.path !== undefined) args.push(...blockNodes(disk.node, disk.path, disk.format, isReadOnly(disk)))
    args.push('-device', diskDevice(disk, nextSlot))
  }
  return args
}

const isReadOnly = (disk: QemuDisk): boolean => disk.readOnly || disk.media === 'cdrom'

/** Assigns AHCI ports and IDE bus/unit in userdevice order, so the guest enumerates disks that way. */
function diskDevice(disk: QemuDisk, nextSlot: { ahci: number; ide: number }): string {
  const common = {
    id: diskDeviceId(disk),
    // An empty CD drive has no medium node; QMP can insert one later by the device id.
    drive: disk.path === undefined ? undefined : disk.node,
    bootindex: disk.bootIndex,
  }
  const ideModel = disk.media === 'cdrom' ? 'ide-cd' : 'ide-hd'
  switch (disk.bus) {
    case 'virtio':
      return props('virtio-blk-pci', { ...common, bus: portBus(disk.hotplugPort) })
    case 'nvme':
      return props('nvme', { ...common, serial: disk.node, bus: portBus(disk.hotplugPort) })
    case 'ahci':
      return props(ideModel, { ...common, bus: `ide.${nextSlot.ahci++}` })
    case 'ide': {
      const slot = nextSlot.ide++
      return props(ideModel, { ...common, bus: `ide.${slot >> 1}`, unit: slot & 1 })
    }
  }
}

const portBus = (port: number | undefined): string | undefined => (port === undefined ? undefined : hotplugPortId(port))

const NIC_DEVICES: Record<QemuNic['model'], string> = { virtio: 'virtio-net-pci', e1000: 'e1000', rtl8139: 'rtl8139' }

function nicArgs(config: QemuVmConfig): string[] {
  return config.nics.flatMap((nic) => [
    '-netdev', props('tap', { id: netdevId(nic), ifname: nic.tap, script: 'no', downscript: 'no' }),
    '-device', props(NIC_DEVICES[nic.model], {
      id: nic.id, netdev: netdevId(nic), mac: nic.mac, bootindex: nic.bootIndex, bus: portBus(nic.hotplugPort),
    }),
  ])
}

/** One serial port whose output is always logged, and readable live by whoever connects. */
function serialArgs(paths: RunPaths): string[] {
  return [
    '-chardev', props('socket', {
      id: 'ser0', path: paths.serialSocket, server: 'on', wait: 'off', logfile: paths.serialLog, logappend: 'on',
    }),
    '-device', props('isa-serial', { id: 'serial0', chardev: 'ser0' }),
  ]
}

function smbiosArgs(config: QemuVmConfig): string[] {
  return config.oemStrings.flatMap((value) => ['-smbios', props('type=11', { value })])
}

function controlArgs(config: QemuVmConfig, paths: RunPaths): string[] {
  return [
    // A guest panic is reported (GUEST_PANICKED) and ends the process, so actions_after_crash decide.
    '-device', props('pvpanic', { id: 'panic0' }),
    '-action', props(undefined, { panic: 'shutdown', reboot: config.onReboot === 'shutdown' ? 'shutdown' : undefined }),
    '-chardev', props('socket', { id: 'qmp', path: paths.qmp, server: 'on', wait: 'off' }),
    '-mon', props(undefined, { chardev: 'qmp', mode: 'control' }),
    '-pidfile', paths.pidfile,
    ...(config.paused ? ['-S'] : []),
    ...(config.incoming ? ['-incoming', 'defer'] : []),
  ]
}

// ---- validation: refuse what QEMU would refuse (or silently get wrong), with a clear message

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i
/** QEMU's rule for ids and node names; node names also stop at 31 characters (we append "f"). */
const ID_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,29}$/
const TAP_RE = /^[^\s/:]{1,15}$/

export function validateConfig(config: QemuVmConfig): void {
  const fail = (message: string): never => {
    throw new Error(`VM ${config.uuid}: ${message}`)
  }
  if (!UUID_RE.test(config.uuid)) fail(`uuid "${config.uuid}" is not a UUID`)
  validateSizes(config, fail)
  validatePaths(config, fail)
  validateFirmware(config, fail)
  config.disks.forEach((disk) => validateDisk(config, disk, fail))
  config.nics.forEach((nic) => validateNic(config, nic, fail))
  validateCounts(config, fail)
  validateUniqueness(config, fail)
}

type Fail = (message: string) => never

const isCount = (n: number, min: number): boolean => Number.isInteger(n) && n >= min

function validateSizes(config: QemuVmConfig, fail: Fail): void {
  if (!isCount(config.memoryMiB, 1)) fail(`memoryMiB must be a positive integer, got ${config.memoryMiB}`)
  if (!isCount(config.vcpus, 1)) fail(`vcpus must be a positive integer, got ${config.vcpus}`)
  if (!isCount(config.maxVcpus, config.vcpus) || config.maxVcpus > MAX_VCPUS) {
    fail(`maxVcpus must be an integer between vcpus (${config.vcpus}) and ${MAX_VCPUS}, got ${config.maxVcpus}`)
  }
  if (!isCount(config.hotplugPorts, 0)) fail(`hotplugPorts must be a non-negative integer, got ${config.hotplugPorts}`)
  if (config.hotplugPorts > 0 && config.machine !== 'q35') fail('hot-plug root ports need machine q35 (pc hot-plugs on its PCI bus directly)')
}

function validatePaths(config: QemuVmConfig, fail: Fail): void {
  if (!isAbsolute(config.runDir)) fail(`runDir must be an absolute path, got "${config.runDir}"`)
  const { qmp, vnc, serialSocket } = runPaths(config.runDir)
  for (const socket of [qmp, vnc, serialSocket]) {
    const bytes = Buffer.byteLength(socket)
    if (bytes > MAX_SOCKET_PATH_BYTES) fail(`socket path ${socket} is ${bytes} bytes, over the ${MAX_SOCKET_PATH_BYTES}-byte unix socket limit: use a shorter runDir`)
  }
  for (const [what, path] of [['ovmfCode', config.ovmfCode], ['nvram', config.nvram], ...config.disks.map((d) => [`disk ${d.node} path`, d.path])]) {
    if (path !== undefined && !isAbsolute(path) && !isNetworkImage(path)) fail(`${what} must be an absolute path, an nfs:// URL or an RBD image, got "${path}"`)
  }
}

function validateFirmware(config: QemuVmConfig, fail: Fail): void {
  if (config.secureBoot && config.firmware !== 'uefi') fail('secureBoot needs firmware uefi')
  if (config.secureBoot && config.machine !== 'q35') fail('secureBoot needs machine q35 (SMM-protected variable store)')
  if (config.firmware === 'uefi' && (config.ovmfCode === undefined || config.nvram === undefined)) {
    fail('firmware uefi needs ovmfCode and nvram')
  }
}

function validateDisk(config: QemuVmConfig, disk: QemuDisk, fail: Fail): void {
  const what = `disk ${disk.node}`
  if (!ID_RE.test(disk.node)) fail(`${what}: node name must start with a letter, use [A-Za-z0-9_.-] and be at most 30 characters`)
  if (!isCount(disk.userdevice, 0)) fail(`${what}: userdevice must be a non-negative integer, got ${disk.userdevice}`)
  if (disk.path === undefined && disk.media !== 'cdrom') fail(`${what}: only a CD drive may be empty`)
  if (disk.media === 'cdrom' && disk.bus !== 'ide' && disk.bus !== 'ahci') fail(`${what}: a CD drive needs bus ide or ahci, not ${disk.bus}`)
  if ((disk.bus === 'ahci' || disk.bus === 'nvme') && config.machine !== 'q35') fail(`${what}: bus ${disk.bus} needs machine q35`)
  if (disk.bus === 'ide' && config.machine !== 'pc') fail(`${what}: bus ide needs machine pc (q35 has AHCI: use bus ahci)`)
  if (disk.readOnly && disk.media === 'disk' && (disk.bus === 'ide' || disk.bus === 'ahci')) fail(`${what}: IDE/AHCI hard disks cannot be read-only (a virtio or NVMe disk can be)`)
  validateBootIndex(what, disk.bootIndex, fail)
  validateHotplugPort(config, what, disk.hotplugPort, fail)
  if (disk.hotplugPort !== undefined && disk.bus !== 'virtio' && disk.bus !== 'nvme') fail(`${what}: only virtio and nvme disks sit on a hot-plug port`)
}

function validateNic(config: QemuVmConfig, nic: QemuNic, fail: Fail): void {
  const what = `NIC ${nic.id}`
  if (!ID_RE.test(nic.id)) fail(`${what}: id must start with a letter, use [A-Za-z0-9_.-] and be at most 30 characters`)
  if (!MAC_RE.test(nic.mac)) fail(`${what}: "${nic.mac}" is not a MAC address`)
  if (!TAP_RE.test(nic.tap)) fail(`${what}: tap "${nic.tap}" is not a valid interface name (1-15 characters, no space, / or :)`)
  validateBootIndex(what, nic.bootIndex, fail)
  validateHotplugPort(config, what, nic.hotplugPort, fail)
}

function validateBootIndex(what: string, bootIndex: number | undefined, fail: Fail): void {
  if (bootIndex !== undefined && !isCount(bootIndex, 0)) fail(`${what}: bootIndex must be a non-negative integer, got ${bootIndex}`)
}

function validateHotplugPort(config: QemuVmConfig, what: string, port: number | undefined, fail: Fail): void {
  if (port !== undefined && !(isCount(port, 0) && port < config.hotplugPorts)) {
    fail(`${what}: hotplugPort ${port} does not exist (the VM has ${config.hotplugPorts} hot-plug ports)`)
  }
}

function validateCounts(config: QemuVmConfig, fail: Fail): void {
  const count = (bus: QemuDisk['bus']): number => config.disks.filter((d) => d.bus === bus).length
  if (count('ahci') > AHCI_PORTS) fail(`${count('ahci')} AHCI devices, but q35 has ${AHCI_PORTS} AHCI ports`)
  if (count('ide') > IDE_SLOTS) fail(`${count('ide')} IDE devices, but pc has ${IDE_SLOTS} IDE slots`)
}

function validateUniqueness(config: QemuVmConfig, fail: Fail): void {
  const unique = (what: string, values: (string | number | undefined)[]): void => {
    const seen = new Set<string | number>()
    for (const value of values) {
      if (value === undefined) continue
      if (seen.has(value)) fail(`duplicate ${what} ${value}`)
      seen.add(value)
    }
  }
  const { disks, nics } = config
  unique('userdevice', disks.map((d) => d.userdevice))
  unique('block node name', [FIRMWARE_CODE_NODE, FIRMWARE_VARS_NODE, ...disks.flatMap((d) => [d.node, fileNodeName(d)])])
  const fixedIds = ['video0', 'tablet0', 'serial0', ...Array.from({ length: config.hotplugPorts }, (_, i) => hotplugPortId(i))]
  unique('device id', [...fixedIds, ...disks.map(diskDeviceId), ...nics.map((n) => n.id)])
  unique('bootIndex', [...disks.map((d) => d.bootIndex), ...nics.map((n) => n.bootIndex)])
  unique('hotplugPort', [...disks.map((d) => d.hotplugPort), ...nics.map((n) => n.hotplugPort)])
  unique('MAC', nics.map((n) => n.mac.toLowerCase()))
  unique('tap', nics.map((n) => n.tap))
}
