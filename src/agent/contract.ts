// The host agent's interface, types only: every JSON call by name with its argument and
// result, every byte stream and connect by name with its argument, and the failure body. The
// API layer takes its agent types from here alone; the agent's implementation imports them.
// Arguments and results are JSON (checked below), so the same contract can run between hosts.
import type { Duplex, Readable, Writable } from 'node:stream'
import type { OutgoingHttpHeaders } from 'node:http'
import type { Frozen, SrDriverInfo, SrLocation, SrProbe, SrUsage, VdiFormat, VdiImage } from '../storage/driver.js'
import type { ImageNode } from '../storage/chain.js'
import type { GcOutcome } from '../storage/gc.js'
import type { DeviceList } from '../qemu/hotplug.js'
import type { MigrationStats, StopReason } from '../qemu/backend.js'
import type { Compression } from '../xva/format.js'

export type { DeviceList, Frozen, MigrationStats, GcOutcome, ImageNode, SrDriverInfo, SrLocation, SrProbe, SrUsage, StopReason, VdiFormat, VdiImage }

// ---- host ----

export interface CpuFacts {
  vendor: string
  modelname: string
  model: string
  family: string
  stepping: string
  speed: string
  flags: string
  features: string
}

export interface IpAddress {
  address: string
  prefix: number
  /** Leased (DHCP) or autoconfigured rather than set by hand. */
  dynamic: boolean
}

export interface NicFacts {
  device: string
  mac: string
  mtu: number
  /** Backed by a device (sysfs `device` link), as xapi's networkd tells a NIC from a bridge, tap or VLAN. */
  physical: boolean
  carrier: boolean
  /** Mbit/s; 0 when the driver does not say. */
  speed: number
  fullDuplex: boolean
  /** PCI ids and address of the NIC's PCI function, when it has one. */
  vendorId: string
  deviceId: string
  pciBusPath: string
  ipv4: IpAddress[]
  /** Global-scope addresses only (link-local ones are not configuration). */
  ipv6: IpAddress[]
}

export interface NetworkFacts {
  nics: NicFacts[]
  gateway4?: { device: string; address: string }
  gateway6?: { device: string; address: string }
  dns: string[]
}

export interface HostFacts {
  hostname: string
  cpuCount: number
  cpus: CpuFacts[]
  socketCount: number
  memoryTotal: number
  memoryFree: number
  kernel: string
  qemuVersion: string
  kvm: boolean
  /** host.bios_strings: the SMBIOS strings xapi reads with dmidecode. */
  biosStrings: Record<string, string>
  network: NetworkFacts
}

// ---- VMs ----

export interface VmDisk {
  userdevice: number
  /** The image file; none for an empty CD drive. */
  path?: string
  format: VdiFormat
  readOnly: boolean
  type: 'Disk' | 'CD'
  bootable: boolean
}

/** A VDI's image as the API layer names it; the agent finds its file, so naming every disk of a VM costs no round trip. */
export interface VdiRef {
  sr: SrLocation
  location: string
  /** The file's format in the SR (a suspend image is raw). */
  format?: VdiFormat
}

/** A VM disk as the API layer sends it: by its image (none for an empty CD drive) rather than its file. */
export type VmDiskByImage = Omit<VmDisk, 'path'> & { image?: VdiRef }

/** A NIC as the API layer names it: by network; the agent picks the bridge and tap. */
export interface VmNic {
  device: string
  mac: string
  /** The network's uuid. */
  network: string
}

/** A VM as the agent starts it: decoded from its records, host-neutral, its disks by file. */
export interface StartRequest {
  uuid: string
  name: string
  memoryBytes: number
  vcpus: number
  maxVcpus: number
  firmware: 'bios' | 'uefi'
  secureBoot: boolean
  platform: Record<string, string>
  /** HVM_boot_params.order: c = disks, d = CD drives, n = network. */
  bootOrder: string
  oemStrings: string[]
  /** actions_after_reboot is not "restart": a guest reboot ends the VM instead. */
  haltOnReboot?: boolean
  disks: VmDisk[]
  nics: VmNic[]
  /** VM.NVRAM's EFI-variables, if the VM has run before. */
  nvram?: string
  paused?: boolean
}

/** A start request as the API layer sends it: its disks by image, whose files the agent finds. */
export type StartByImage = Omit<StartRequest, 'disks'> & { disks: VmDiskByImage[] }

/** A disk of a running VM, by VM uuid and userdevice. */
export interface LiveDisk {
  uuid: string
  userdevice: number
}

/** What a VM leaves behind when it stops: its UEFI variable store, compressed (base64), if it has one. */
export interface StoppedVm {
  nvram?: string
}

// ---- storage ----

/** An SR's directory, for the calls that work on a file SR's images whatever its type. */
export interface SrRef {
  path: string
}

/** A running disk a checkpoint freezes: its SR, its image, and where it goes on. */
export interface CheckpointDisk {
  sr: SrLocation
  userdevice: number
  location: string
  next: string
}

/** A VDI to freeze for a snapshot or clone. */
export interface FreezeRequest {
  sr: SrLocation
  location: string
  /** Where the VDI goes on if its image freezes as it is. */
  next: string
  /** The running disk the VDI is: frozen live by its QEMU. */
  live?: LiveDisk
  /** The VDI is a snapshot: its image is immutable already. */
  immutable?: boolean
  /** Where to make a thin clone on the frozen image (VDI.clone); without it, the frozen image is the new VDI (VDI.snapshot). */
  clone?: string
}

/** A frozen VDI: where it goes on, the image holding its content, and the new VDI's image (absent if making it failed). */
export interface FreezeResult extends Frozen {
  image?: VdiImage
}

/** The disks frozen until the first failure (which the caller raises once it has recorded where they went on), and their SRs' figures by directory. */
export interface FreezeOutcome {
  done: FreezeResult[]
  failure?: AgentFailure
  usage: Record<string, SrUsage>
}

// ---- bulk transfers (stream arguments) ----

export type TransferFormat = 'raw' | 'qcow2' | 'vhd'

export interface TransferArgs {
  /** The SR directory on this host. */
  sr: string
  /** The VDI's location (its image file's name). */
  location: string
  format: TransferFormat
  /** format=vhd export: the VDI's uuid (written into the VHD footer). */
  uuid?: string
  /** format=vhd delta export: the base snapshot VDI (same SR); only blocks changed since it are sent. */
  base?: { location: string; uuid: string; name?: string; timestamp?: number }
}

export interface ImportArgs extends TransferArgs {
  /** The byte count the client announced; null when unknown (XO's 1 PiB Content-Length). */
  expected: number | null
}

/** The JSON answer of a `vdi.import` stream. */
export interface ImportResult {
  received: number
}

export interface XvaDisk {
  /** The VDI's id in ova.xml (Ref:N). */
  id: string
  /** SR directory, image name and format. */
  sr: string
  location: string
  format: VdiFormat
  /** The VDI's virtual size: what the archive carries (a memory image's file may end sooner). */
  size: number
}

export interface XvaExportArgs {
  disks: XvaDisk[]
  compression: Compression
}

export interface ImportTarget {
  location: string
  format: VdiFormat
  virtualSize: number
}

export interface ImportTargets {
  /** By archive id (Ref:N): the image each disk's chunks go into. */
  disks: Record<string, ImportTarget>
  /** Ignore checksum mismatches (xapi's force=true). */
  force: boolean
  /** Whether every chunk must be followed by its checksum (export_vsn ≥ 1). */
  requireChecksums: boolean
}

/** A console to open: a running VM's (by uuid) VNC or serial socket, or the host's own. */
export interface ConsoleTarget {
  vm: string
  protocol: 'rfb' | 'vt100'
  controlDomain?: true
}

// ---- the tables ----

/** One JSON call: its argument (void: none) and result (void: none). */
/** What host.power does to the host's daemon: host.shutdown stops it; host.reboot and host.restart_agent start it again. */
export type HostPowerAction = 'stop' | 'restart'

interface Call<Args, Result> {
  args: Args
  result: Result
}

export interface AgentCalls {
  'host.facts': Call<void, HostFacts>
  'host.server-certificate': Call<void, string>
  'host.install-server-certificate': Call<{ key: string; cert: string; chain: string[] }, void>
  /** This host's clock (ms since the epoch): the master compares it with its own. */
  'host.clock': Call<void, number>
  /** This host's daemon stops, or starts again, shortly after answering. */
  'host.power': Call<{ action: HostPowerAction }, void>
  /** Makes the host a member of the pool whose master is at `address` (pool.recover_slaves on that master). */
  'host.follow-master': Call<{ address: string }, void>

  /** The SR drivers of this host, with the capabilities each declares (the SM records). */
  'sr.drivers': Call<void, SrDriverInfo[]>
  'sr.probe': Call<{ type: string; config: Record<string, string> }, SrProbe>
  'sr.make': Call<SrLocation, void>
  'sr.attach': Call<SrLocation, void>
  'sr.detach': Call<SrLocation, void>
  'sr.remove': Call<SrLocation, void>
  'sr.usage': Call<SrLocation, SrUsage>
  'sr.scan': Call<SrLocation, VdiImage[]>
  'sr.tree': Call<SrRef, ImageNode[]>
  /** Normalises the SR's image tree; `live` names the images running VMs write to, by location. */
  'sr.gc': Call<SrLocation & { referenced: string[]; live: Record<string, LiveDisk> }, GcOutcome>
  'vdi.create': Call<SrLocation & { size: number; nameLabel: string }, VdiImage>
  'vdi.destroy': Call<SrLocation & { location: string }, void>
  'vdi.resize': Call<SrLocation & { location: string; size: number }, VdiImage>
  'vdi.image': Call<SrLocation & { location: string }, VdiImage>
  'vdi.path': Call<SrLocation & { location: string; format?: VdiFormat }, string>
  /** VDI.snapshot and VDI.clone of any number of VDIs in one call: frozen in order, stopping at the first failure. */
  'vdi.freeze': Call<{ disks: FreezeRequest[] }, FreezeOutcome>
  'vdi.copy': Call<SrLocation & { source: VdiRef; location: string }, VdiImage>
  'vdi.import-file': Call<SrLocation & { source: string; format: VdiFormat; location: string }, VdiImage>
  'vdi.copy-raw': Call<SrRef & { from: string; to: string }, string>
  'vdi.reserve-raw': Call<SrRef & { location: string; size: number }, string>

  'vm.start': Call<StartByImage, { pid: number }>
  'vm.resume': Call<{ request: StartByImage; state: VdiRef }, { pid: number }>
  'vm.suspend': Call<{ uuid: string; statePath: string }, StoppedVm>
  /**
   * A live migration's destination: QEMU waiting for the stream on `address` (this host's); the
   * port it listens on. With `exports` (storage motion), those disks (by userdevice, new empty
   * images) are served to the source's mirrors over NBD on `nbdPort`.
   */
  'vm.receive': Call<{ request: StartByImage; address: string; exports?: number[] }, { port: number; nbdPort?: number }>
  /**
   * The source's side: sends the VM; stalls of `stallMs` and failures cancel it, and the VM runs on
   * here. With `mirror` (storage motion), those disks are first mirrored to the destination's NBD
   * exports at address:mirror.port and kept in sync until the memory is across.
   */
  'vm.migrate-send': Call<{ uuid: string; address: string; port: number; stallMs: number; mirror?: { port: number; userdevices: number[] } }, MigrationStats>
  /** The destination's side once the source sent everything: waits until it is all in, the vCPUs still stopped (vm.unpause runs them); the NBD exports close. */
  'vm.received': Call<{ uuid: string; timeoutMs: number }, void>
  /** The UEFI variable store of a VM running here, as it is now. */
  'vm.nvram': Call<{ uuid: string }, { nvram?: string }>
  /** The VMs whose QEMU runs here (and that the agent holds). */
  'vm.list': Call<Record<string, never>, string[]>
  'vm.stop': Call<{ uuid: string; clean: boolean; timeoutMs?: number }, StoppedVm>
  'vm.reset': Call<{ uuid: string }, void>
  'vm.pause': Call<{ uuid: string }, void>
  'vm.unpause': Call<{ uuid: string }, void>
  'vm.devices': Call<{ uuid: string }, DeviceList>
  'vm.resize-disk': Call<LiveDisk & { size: number }, void>
  /** Moves a running disk live onto `target` (an empty image of its size): mirrored, then switched over; a copy stalled for `stallMs` is given up and the disk stays. */
  'vm.move-disk': Call<LiveDisk & { target: VdiRef; stallMs: number }, void>
  'vm.plug-disk': Call<{ uuid: string; platform: Record<string, string>; disk: VmDiskByImage }, void>
  'vm.unplug-disk': Call<LiveDisk, void>
  'vm.insert-cd': Call<LiveDisk & { image: VdiRef; format: VdiFormat }, void>
  'vm.eject-cd': Call<LiveDisk, void>
  'vm.plug-nic': Call<{ uuid: string; platform: Record<string, string>; nic: VmNic }, void>
  'vm.move-nic': Call<{ uuid: string; device: string; network: string }, void>
  'vm.unplug-nic': Call<{ uuid: string; device: string }, void>
  'vm.set-vcpus': Call<{ uuid: string; count: number }, void>
  /** Finds the VMs still running after a restart; answers the uuids of those found. */
  'vm.reattach': Call<{ vms: { uuid: string; devices: string[] }[] }, string[]>
  /** Live snapshot of memory and disks: each disk moves onto its overlay `next` in SR `path`; memory goes to `state`. */
  'vm.checkpoint': Call<{ uuid: string; disks: CheckpointDisk[]; state: string }, Frozen[]>

  /** Makes the network's bridge on this host; answers its name. */
  'net.ensure': Call<{ network: string }, string>
  'net.remove': Call<{ network: string }, void>
  /**
   * Puts a PIF's NIC into the network's bridge (made if missing). A NIC carrying addresses (the
   * management one) only on a host that allows it (FLOTILLA_BRIDGE_MANAGEMENT=1): its addresses
   * and routes move onto the bridge. Answers whether the NIC is in the bridge.
   */
  'net.attach': Call<{ network: string; device: string }, boolean>
  /** Takes a PIF's NIC out of the network's bridge, its addresses going back to it. */
  'net.detach': Call<{ network: string; device: string }, void>
  /** A VLAN PIF's device (tag `tag` on NIC `device`) in the network's bridge; OPERATION_NOT_ALLOWED where the kernel has no 802.1Q. */
  'net.vlan-create': Call<{ device: string; tag: number; network: string }, void>
  'net.vlan-remove': Call<{ device: string; tag: number }, void>
}

/** Byte streams: their JSON arguments (the data goes in the request body and out in the answer). */
export interface AgentStreamArgs {
  'vdi.import': ImportArgs
  'vdi.export': TransferArgs
  'xva.export': XvaExportArgs
  'xva.import': { importId: string; sr: string }
  /** The API layer's answer to an import's ova.xml: where the disks go, or none to abort. */
  'xva.import-targets': { importId: string; targets?: ImportTargets }
}

/** Raw byte streams both ways (consoles): their JSON arguments. */
export interface AgentConnectArgs {
  console: ConsoleTarget
}

/** A contract: calls, streams and connects by name. The agent's is AgentContract; tests make small ones. */
export interface Contract {
  calls: object
  streams: object
  connects: object
}

export interface AgentContract {
  calls: AgentCalls
  streams: AgentStreamArgs
  connects: AgentConnectArgs
}

export type CallName<C extends Contract = AgentContract> = keyof C['calls'] & string
export type CallArgs<M extends CallName<C>, C extends Contract = AgentContract> = C['calls'][M] extends { args: infer A } ? A : never
export type CallResult<M extends CallName<C>, C extends Contract = AgentContract> = C['calls'][M] extends { result: infer R } ? R : never
export type StreamName<C extends Contract = AgentContract> = keyof C['streams'] & string
export type ConnectName<C extends Contract = AgentContract> = keyof C['connects'] & string

// ---- the two ends ----

/** Where a stream handler writes its output: an HTTP response, or the caller's stream in this process. */
export type StreamOut = Writable & { writeHead(status: number, headers?: OutgoingHttpHeaders): unknown }

/**
 * What a stream handler sends back: its bytes, and whether they all came (an IncomingMessage is
 * one). An in-process handler's output can also be `forward`ed (agent/client.ts, LocalOutput).
 */
export type AgentStream = Readable & {
  readonly complete: boolean
  readonly headers: Readonly<Record<string, unknown>>
  forward?(target: Writable, onForwarded: (bytes: number) => void): void
}

/** The agent's implementation of every call: a missing, extra or mistyped one does not compile. */
export type CallHandlers<C extends Contract = AgentContract> = { [M in CallName<C>]: (args: CallArgs<M, C>) => Promise<CallResult<M, C>> }
export type StreamHandlers<C extends Contract = AgentContract> = { [S in StreamName<C>]: (args: C['streams'][S], body: Readable, out: StreamOut) => Promise<void> }
export type ConnectHandlers<C extends Contract = AgentContract> = { [K in ConnectName<C>]: (args: C['connects'][K], socket: Duplex) => Promise<void> }

/** A call's arguments after its name: none for a method without one (void). */
export type ArgsOf<A> = [A] extends [void] ? [] : [args: A]

/** How the API layer reaches an agent (agent/client.ts): methods keyed by name, types inferred from the contract. */
export interface Agent<C extends Contract = AgentContract> {
  call<M extends CallName<C>>(method: M, ...args: ArgsOf<CallArgs<M, C>>): Promise<CallResult<M, C>>
  /** A bulk transfer: `body` (if any) goes to the stream handler, whose output comes back. */
  stream<S extends StreamName<C>>(name: S, args: C['streams'][S], body?: Readable): Promise<AgentStream>
  /** A raw byte stream to something on the agent's host (a console socket). */
  connect<K extends ConnectName<C>>(name: K, args: C['connects'][K]): Promise<Duplex>
  /** The error a failure carried inside a result stands for, as a failed call would raise it. */
  failure(f: AgentFailure): Error
}

// ---- errors ----

/**
 * The body of a failed call or stream: the error's message and, for a XenAPI error, its code
 * and params (agent/failure.ts encodes and decodes it).
 */
export interface AgentFailure {
  error?: string
  xapi?: string[]
}

// ---- JSON: what the wire carries unchanged ----

/**
 * `T` where every part JSON would drop or change (functions, Buffers and other class instances
 * with methods, bigint, symbols, undefined in arrays, unknown) is `never`. `undefined` stays as an
 * optional property's absence; `void` (no argument, no result) stays at the top.
 */
type JsonShaped<T> = T extends string | number | boolean | null | undefined
  ? T
  : T extends ((...args: never[]) => unknown) | bigint | symbol
    ? never
    : T extends readonly (infer E)[]
      ? undefined extends E
        ? never
        : readonly JsonShaped<E>[]
      : T extends object
        ? { [K in keyof T]: JsonShaped<T[K]> }
        : never

type IsJson<T> = [unknown] extends [T] ? false : [T] extends [void] ? true : [T] extends [JsonShaped<T>] ? true : false

/** The names in a contract whose arguments or results are not JSON. */
export type NotJson<C extends Contract> =
  | { [M in keyof C['calls']]: C['calls'][M] extends { args: infer A; result: infer R } ? (IsJson<A> extends true ? (IsJson<R> extends true ? never : M) : M) : M }[keyof C['calls']]
  | { [S in keyof C['streams']]: IsJson<C['streams'][S]> extends true ? never : S }[keyof C['streams']]
  | { [K in keyof C['connects']]: IsJson<C['connects'][K]> extends true ? never : K }[keyof C['connects']]

/** Compiles only if `Names` is empty: a method named in the error carries something JSON cannot. */
type NoneOf<Names extends never> = Names
export type AgentContractIsJson = NoneOf<NotJson<AgentContract>>
