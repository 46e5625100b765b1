// The agent's storage calls: each names its SR by where it is on this host (type, directory,
// device) and goes to the driver of that SR type. Copies and raw state files are file SR work.
import { FileSr } from '../storage/file-sr.js'
import { getDriver, driverInfos } from '../storage/registry.js'
import type { SrLocation, SrUsage, VdiFormat, VdiImage } from '../storage/driver.js'

export type { SrDriverInfo, SrLocation, SrUsage, VdiImage } from '../storage/driver.js'

/** An SR's directory, for the calls that work on a file SR's images whatever its type. */
export interface SrRef {
  path: string
}

const driver = (sr: SrLocation) => getDriver(sr.type)

export const storageMethods = {
  'sr.drivers': async () => driverInfos(),
  'sr.make': async (sr: SrLocation) => driver(sr).create(sr),
  'sr.attach': async (sr: SrLocation) => driver(sr).attach(sr),
  'sr.detach': async (sr: SrLocation) => driver(sr).detach(sr),
  'sr.remove': async (sr: SrLocation) => driver(sr).destroy(sr),
  'sr.usage': async (sr: SrLocation): Promise<SrUsage> => driver(sr).usage(sr),
  'sr.scan': async (sr: SrLocation): Promise<VdiImage[]> => driver(sr).scan(sr),
  'vdi.create': async (args: SrLocation & { size: number; nameLabel: string }) => driver(args).createVdi(args, args.size, args.nameLabel),
  'vdi.destroy': async (args: SrLocation & { location: string }) => driver(args).destroyVdi(args, args.location),
  'vdi.clone': async (args: SrLocation & { base: string; location: string }) => driver(args).clone(args, args.base, args.location),
  'vdi.resize': async (args: SrLocation & { location: string; size: number }) => driver(args).resize(args, args.location, args.size),
  'vdi.image': async (args: SrLocation & { location: string }) => driver(args).vdiImage(args, args.location),
  'vdi.path': async (args: SrLocation & { location: string; format?: VdiFormat }) => driver(args).vdiPath(args, args.location, args.format),
  'vdi.copy': async ({ path, source, location }: SrRef & { source: string; location: string }) => new FileSr(path).importCopy(source, 'qcow2', location),
  'vdi.import-file': async ({ path, source, format, location }: SrRef & { source: string; format: 'qcow2' | 'raw'; location: string }) =>
    new FileSr(path).importCopy(source, format, location),
  'vdi.copy-raw': async ({ path, from, to }: SrRef & { from: string; to: string }) => new FileSr(path).copyRaw(from, to),
  'vdi.reserve-raw': async ({ path, location, size }: SrRef & { location: string; size: number }) => new FileSr(path).reserveRaw(location, size),
}
