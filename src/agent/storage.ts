// The agent's storage calls: SRs are directories on this host, VDIs are image files in them.
import { FileSr, type SrUsage, type VdiFormat, type VdiImage } from '../storage/file-sr.js'

export type { SrUsage, VdiImage }

export interface SrRef {
  /** The SR directory (device_config.path of its PBD on this host). */
  path: string
}

export const storageMethods = {
  'sr.attach': async ({ path }: SrRef) => new FileSr(path).attach(),
  'sr.usage': async ({ path }: SrRef): Promise<SrUsage> => new FileSr(path).usage(),
  'sr.scan': async ({ path }: SrRef): Promise<VdiImage[]> => new FileSr(path).scan(),
  'vdi.create': async ({ path, location, size }: SrRef & { location: string; size: number }) => new FileSr(path).create(location, size),
  'vdi.destroy': async ({ path, location }: SrRef & { location: string }) => new FileSr(path).destroy(location),
  'vdi.clone': async ({ path, base, location }: SrRef & { base: string; location: string }) => new FileSr(path).cloneThin(base, location),
  'vdi.copy': async ({ path, source, location }: SrRef & { source: string; location: string }) => new FileSr(path).importCopy(source, 'qcow2', location),
  'vdi.import-file': async ({ path, source, format, location }: SrRef & { source: string; format: 'qcow2' | 'raw'; location: string }) =>
    new FileSr(path).importCopy(source, format, location),
  'vdi.resize': async ({ path, location, size }: SrRef & { location: string; size: number }) => new FileSr(path).resize(location, size),
  'vdi.path': async ({ path, location, format }: SrRef & { location: string; format?: VdiFormat }) => new FileSr(path).path(location, format),
  'vdi.reserve-raw': async ({ path, location, size }: SrRef & { location: string; size: number }) => new FileSr(path).reserveRaw(location, size),
}
