// What every driver of a file-based SR does the same way, wherever its directory is: the VDI
// work on its qcow2 images (file-sr.ts). A driver adds how its SR is made, plugged and removed.
import { randomUUID } from 'node:crypto'
import { FileSr } from './file-sr.js'
import { collectGarbage, type LiveStream } from './gc.js'
import type { SrDriver, SrDriverInfo, SrLocation, VdiFormat } from './driver.js'

export abstract class FileImagesDriver implements SrDriver {
  abstract info(): SrDriverInfo
  abstract create(sr: SrLocation): Promise<void>
  abstract attach(sr: SrLocation): Promise<void>
  abstract detach(sr: SrLocation): Promise<void>
  abstract destroy(sr: SrLocation): Promise<void>

  usage = (sr: SrLocation) => new FileSr(sr.path).usage()
  scan = (sr: SrLocation) => new FileSr(sr.path).scan()
  gc = (sr: SrLocation, referenced: ReadonlySet<string>, liveTops: ReadonlySet<string>, live: LiveStream) => collectGarbage(new FileSr(sr.path), referenced, liveTops, live)
  vdiPath = (sr: SrLocation, location: string, format?: VdiFormat) => new FileSr(sr.path).path(location, format)
  vdiImage = (sr: SrLocation, location: string) => new FileSr(sr.path).image(location)
  /** Named by a fresh uuid: the VDI's uuid is its image's name. */
  createVdi = (sr: SrLocation, size: number) => new FileSr(sr.path).create(randomUUID(), size)
  destroyVdi = (sr: SrLocation, location: string) => new FileSr(sr.path).destroy(location)
  snapshot = (sr: SrLocation, location: string, next: string) => new FileSr(sr.path).freeze(location, next)
  clone = (sr: SrLocation, base: string, location: string) => new FileSr(sr.path).cloneThin(base, location)
  resize = (sr: SrLocation, location: string, size: number) => new FileSr(sr.path).resize(location, size)
  importImage = (sr: SrLocation, source: string, sourceFormat: 'qcow2' | 'raw', location: string) => new FileSr(sr.path).importCopy(source, sourceFormat, location)
}
