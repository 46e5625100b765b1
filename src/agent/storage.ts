// The agent's storage calls: each names its SR by where it is on this host (type, directory,
// device) and goes to the driver of that SR type. How a VDI freezes for a snapshot or clone
// (live in its QEMU, as it is, or not at all) and how a collection merges (in a running VM's
// QEMU or offline) are decided here. Copies and raw state files are file SR work.
import { FileSr } from '../storage/file-sr.js'
import { getDriver, driverInfos } from '../storage/registry.js'
import type { Frozen, SrLocation, SrUsage, VdiFormat, VdiImage } from '../storage/driver.js'

export type { SrDriverInfo, SrLocation, SrUsage, VdiImage } from '../storage/driver.js'

/** An SR's directory, for the calls that work on a file SR's images whatever its type. */
export interface SrRef {
  path: string
}

const driver = (sr: SrLocation) => getDriver(sr.type)

/** A disk of a running VM, by VM uuid and userdevice. */
export interface LiveDisk {
  uuid: string
  userdevice: number
}

/** What storage needs of the VMs running here: live snapshots and merges into running disks happen in their QEMU. */
export interface RunningDisks {
  isRunning(uuid: string): boolean
  freezeDisk(uuid: string, userdevice: number, overlayPath: string): Promise<void>
  streamDisk(uuid: string, userdevice: number, basePath: string | undefined): Promise<void>
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
  failure?: { error: string; xapi?: string[] }
  usage: Record<string, SrUsage>
}

async function freeze(vms: RunningDisks, d: FreezeRequest, done: FreezeResult[]): Promise<void> {
  const sr = driver(d.sr)
  let frozen: Frozen
  if (d.immutable) frozen = { frozen: d.location, location: d.location }
  else if (d.live) {
    await vms.freezeDisk(d.live.uuid, d.live.userdevice, sr.vdiPath(d.sr, d.next))
    frozen = { frozen: d.location, location: d.next }
  } else frozen = await sr.snapshot(d.sr, d.location, d.next)
  const result: FreezeResult = { ...frozen }
  done.push(result)
  result.image = d.clone ? await sr.clone(d.sr, frozen.frozen, d.clone) : await sr.vdiImage(d.sr, frozen.frozen)
}

/** VDI.snapshot and VDI.clone of any number of VDIs in one call: frozen in order, stopping at the first failure. */
async function freezeAll(vms: RunningDisks, disks: FreezeRequest[]): Promise<FreezeOutcome> {
  const outcome: FreezeOutcome = { done: [], usage: {} }
  for (const d of disks) {
    try {
      await freeze(vms, d, outcome.done)
    } catch (err) {
      const { code, params, message } = err as Error & { code?: unknown; params?: unknown }
      outcome.failure = { error: message, ...(typeof code === 'string' && Array.isArray(params) ? { xapi: [code, ...params.map(String)] } : {}) }
      break
    }
  }
  for (const d of disks.slice(0, outcome.done.length)) {
    const usage = outcome.usage[d.sr.path] ? undefined : await driver(d.sr).usage(d.sr).catch(() => undefined)
    if (usage) outcome.usage[d.sr.path] = usage
  }
  return outcome
}

export const storageMethods = (vms: RunningDisks) => ({
  'sr.drivers': async () => driverInfos(),
  'sr.make': async (sr: SrLocation) => driver(sr).create(sr),
  'sr.attach': async (sr: SrLocation) => driver(sr).attach(sr),
  'sr.detach': async (sr: SrLocation) => driver(sr).detach(sr),
  'sr.remove': async (sr: SrLocation) => driver(sr).destroy(sr),
  'sr.usage': async (sr: SrLocation): Promise<SrUsage> => driver(sr).usage(sr),
  'sr.scan': async (sr: SrLocation): Promise<VdiImage[]> => driver(sr).scan(sr),
  'vdi.create': async (args: SrLocation & { size: number; nameLabel: string }) => driver(args).createVdi(args, args.size, args.nameLabel),
  'vdi.destroy': async (args: SrLocation & { location: string }) => driver(args).destroyVdi(args, args.location),
  'vdi.freeze': async ({ disks }: { disks: FreezeRequest[] }) => freezeAll(vms, disks),
  'sr.gc': async ({ referenced, live, ...sr }: SrLocation & { referenced: string[]; live: Record<string, LiveDisk> }) => {
    const tops = new Set(Object.keys(live).filter((location) => vms.isRunning(live[location]!.uuid)))
    return driver(sr).gc(sr, new Set(referenced), tops, async (child, newBacking) => {
      const disk = live[child]
      if (!disk || !vms.isRunning(disk.uuid)) return false
      await vms.streamDisk(disk.uuid, disk.userdevice, newBacking ? driver(sr).vdiPath(sr, newBacking) : undefined)
      return true
    })
  },
  'sr.tree': async ({ path }: SrRef) => new FileSr(path).tree(),
  'vdi.resize': async (args: SrLocation & { location: string; size: number }) => driver(args).resize(args, args.location, args.size),
  'vdi.image': async (args: SrLocation & { location: string }) => driver(args).vdiImage(args, args.location),
  'vdi.path': async (args: SrLocation & { location: string; format?: VdiFormat }) => driver(args).vdiPath(args, args.location, args.format),
  'vdi.copy': async ({ path, source, location }: SrRef & { source: string; location: string }) => new FileSr(path).importCopy(source, 'qcow2', location),
  'vdi.import-file': async ({ path, source, format, location }: SrRef & { source: string; format: 'qcow2' | 'raw'; location: string }) =>
    new FileSr(path).importCopy(source, format, location),
  'vdi.copy-raw': async ({ path, from, to }: SrRef & { from: string; to: string }) => new FileSr(path).copyRaw(from, to),
  'vdi.reserve-raw': async ({ path, location, size }: SrRef & { location: string; size: number }) => new FileSr(path).reserveRaw(location, size),
})
