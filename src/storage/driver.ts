// The one interface every SR type's driver implements on a host, and what a driver declares
// about itself: xapi's SM capability names, which the SM records show clients unchanged.
// Drivers are stateless: each call names the SR by where it is on this host.
import type { GcOutcome, LiveStream } from './gc.js'

/** xapi's SM capability names (smint.ml) that Flotilla's drivers declare. */
export type SrCapability =
  | 'SR_PROBE'
  | 'SR_UPDATE'
  | 'SR_SCAN'
  | 'VDI_CREATE'
  | 'VDI_DELETE'
  | 'VDI_ATTACH'
  | 'VDI_DETACH'
  | 'VDI_UPDATE'
  | 'VDI_CLONE'
  | 'VDI_SNAPSHOT'
  | 'VDI_RESIZE'
  | 'VDI_RESIZE_ONLINE'
  | 'VDI_MIRROR'
  | 'THIN_PROVISIONING'

export interface SrDriverInfo {
  /** SR.type of the SRs it drives (SM.type). */
  type: string
  /** SM.name_label. */
  name: string
  /** SM.capabilities, in the order the SM record lists them. */
  capabilities: readonly SrCapability[]
}

/** Where an SR is on this host: its type, its directory (or URL), the block device under it if any, and for network SRs their PBD's device_config (credentials). */
export interface SrLocation {
  type: string
  path: string
  device?: string
  config?: Record<string, string>
}

export interface SrUsage {
  physicalSize: number
  physicalUtilisation: number
  free: number
}

export interface VdiImage {
  location: string
  virtualSize: number
  physicalUtilisation: number
  /** Raw for drivers without image files (RBD); qcow2 when absent. */
  format?: VdiFormat
}

/** A VDI's file: qcow2 images for disks, raw files for suspend images (memory and device state) and ISO files. */
export type VdiFormat = 'qcow2' | 'raw'

/** The outcome of making a VDI's content immutable: the image holding it, and where the VDI goes on. */
export interface Frozen {
  frozen: string
  location: string
}

/** An SM driver's numbered failure (XE_SR_ERRORCODES.xml): xapi's SR_BACKEND_FAILURE_<n>. */
export type SmFailureCode = `SR_BACKEND_FAILURE_${number}`

export class StorageError extends Error {
  constructor(
    readonly code: 'SR_FULL' | 'VDI_MISSING' | 'SR_BACKEND_FAILURE' | 'SR_UNKNOWN_DRIVER' | SmFailureCode,
    readonly params: string[],
  ) {
    super(`${code}(${params.join(', ')})`)
  }
}

/** The SM failures Flotilla's drivers raise, by xapi's numbers and descriptions. */
export const SM_FAILURES = {
  Unimplemented: [38, 'The requested method is not supported/implemented'],
  NFSMount: [73, 'NFS mount error'],
  ConfigServerMissing: [102, 'The request is missing the server parameter'],
  NFSTarget: [108, 'Unable to detect an NFS service on this target.'],
} as const

/** An SM failure as xapi passes one on: SR_BACKEND_FAILURE_<n> with ['', description with the reason, the driver's output]. */
export function smFailure(name: keyof typeof SM_FAILURES, reason?: string): StorageError {
  const [n, description] = SM_FAILURES[name]
  return new StorageError(`SR_BACKEND_FAILURE_${n}`, ['', reason ? `${description} [opterr=${reason}]` : description, ''])
}

/** What SR.probe found with the device_config it was given. */
export interface SrProbe {
  /** The exports of the server (NFS) when device_config names no path on it yet. */
  exports?: string[]
  /** The uuids of the SRs at the place device_config names. */
  srs?: string[]
  /** The pools of a Ceph cluster when device_config names none yet. */
  pools?: string[]
}

export interface SrDriver {
  info(): SrDriverInfo
  /** SR.probe: what there is at the place `config` (a PBD's device_config, maybe partial) names. */
  probe?(config: Record<string, string>): Promise<SrProbe>
  /** Snapshots are the storage's own, also of a running VM's disk (no QEMU overlay): RBD. */
  readonly snapshotsInPlace?: boolean
  /** A full copy of an image file (any format) as the SR's new image `location` (VM.copy, imports). */
  importImage(sr: SrLocation, source: string, sourceFormat: 'qcow2' | 'raw', location: string): Promise<VdiImage>
  /** SR.create: prepares the SR's storage (formats its device) and attaches it. */
  create(sr: SrLocation): Promise<void>
  /** PBD.plug. */
  attach(sr: SrLocation): Promise<void>
  /** PBD.unplug. */
  detach(sr: SrLocation): Promise<void>
  /** SR.destroy: removes the SR's storage and all it holds. */
  destroy(sr: SrLocation): Promise<void>
  usage(sr: SrLocation): Promise<SrUsage>
  /** The images of the SR that can be VDIs. */
  scan(sr: SrLocation): Promise<VdiImage[]>
  /** Normalises the SR's image tree; `referenced` are the images VDI records name, `liveTops` those running VMs write to. */
  gc(sr: SrLocation, referenced: ReadonlySet<string>, liveTops: ReadonlySet<string>, live: LiveStream): Promise<GcOutcome>
  /** The file of a VDI, as QEMU or a transfer opens it. */
  vdiPath(sr: SrLocation, location: string, format?: VdiFormat): string
  vdiImage(sr: SrLocation, location: string): Promise<VdiImage>
  /** VDI.create: a new empty VDI; the driver names it, from `nameLabel` where its names are visible (ISO files). */
  createVdi(sr: SrLocation, size: number, nameLabel: string): Promise<VdiImage>
  /** Removes a VDI's file at once (images others may build on go with gc instead). */
  destroyVdi(sr: SrLocation, location: string): Promise<void>
  /** Freezes a halted VDI's content for a snapshot or clone (see Frozen). */
  snapshot(sr: SrLocation, location: string, next: string): Promise<Frozen>
  /** A thin clone: a new writable VDI built on the frozen image `base`. */
  clone(sr: SrLocation, base: string, location: string): Promise<VdiImage>
  /** Offline resize. */
  resize(sr: SrLocation, location: string, size: number): Promise<VdiImage>
}
