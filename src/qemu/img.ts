// Every qemu-img call the platform makes. Formats are always given explicitly where we know
// them: letting qemu-img probe a raw image a guest wrote would trust the guest's bytes.
import { imageLockedError } from './errors.js'
import { runProgram } from '../lib/programs.js'


export type ImageFormat = 'qcow2' | 'raw' | 'vpc'

export interface ImageInfo {
  format: string
  virtualSize: number
  /** Bytes allocated on the host filesystem. */
  actualSize: number
  backingFile?: string
  backingFormat?: string
  clusterSize?: number
  /** qcow2 dirty flag (lazy refcounts left unflushed by a crash). */
  dirty: boolean
}

export interface ImageCheck {
  corruptions: number
  leaks: number
  checkErrors: number
}

export class QemuImgError extends Error {
  constructor(
    readonly args: string[],
    readonly stderr: string,
  ) {
    super(`qemu-img ${args.join(' ')} failed: ${stderr.trim() || 'no error output'}`)
    this.name = 'QemuImgError'
  }
}

/** VHD (vpc) as XCP-ng exchanges it: dynamic, and exactly the requested size (not CHS-rounded). */
const formatOptions = (format: ImageFormat): string[] => (format === 'vpc' ? ['-o', 'subformat=dynamic,force_size=on'] : [])

/** Runs qemu-img; `reportingExitCodes` are failures that still print a usable report on stdout. */
async function qemuImg(args: string[], reportingExitCodes: number[] = []): Promise<string> {
  try {
    const { stdout } = await runProgram('qemu-img', args, { maxBuffer: 64 * 1024 * 1024 })
    return stdout
  } catch (err) {
    const { code, stdout, stderr } = err as { code?: number | string; stdout?: string; stderr?: string }
    if (typeof code === 'number' && reportingExitCodes.includes(code) && stdout) return stdout
    const output = stderr || (err as Error).message
    throw imageLockedError(output) ?? new QemuImgError(args, output)
  }
}

export async function createImage(opts: {
  path: string
  format: ImageFormat
  /** Bytes; may be omitted with a backing file (the overlay takes its size). */
  size?: number
  backing?: { path: string; format: ImageFormat }
}): Promise<void> {
  const backing = opts.backing ? ['-b', opts.backing.path, '-F', opts.backing.format] : []
  const size = opts.size === undefined ? [] : [String(opts.size)]
  await qemuImg(['create', '-q', '-f', opts.format, ...formatOptions(opts.format), ...backing, opts.path, ...size])
}

/** Reads an image's header even while a VM uses it (-U: no lock, may be slightly stale). */
export async function imageInfo(path: string, format?: ImageFormat): Promise<ImageInfo> {
  return infoOf(JSON.parse(await qemuImg(['info', '--output=json', '-U', ...(format ? ['-f', format] : []), path])))
}

/** The fields of `qemu-img info --output=json` we use (its JSON is untyped). */
function infoOf(raw: Record<string, any>): ImageInfo {
  return {
    format: raw.format,
    virtualSize: raw['virtual-size'],
    actualSize: raw['actual-size'] ?? 0,
    backingFile: raw['full-backing-filename'] ?? raw['backing-filename'],
    backingFormat: raw['backing-filename-format'],
    clusterSize: raw['cluster-size'],
    dirty: raw['dirty-flag'] ?? false,
  }
}

export async function convertImage(opts: {
  source: string
  sourceFormat: ImageFormat
  target: string
  targetFormat: ImageFormat
  /** Write only what differs from this image, and make it the target's backing file (delta export). */
  backing?: { path: string; format: ImageFormat }
  compress?: boolean
}): Promise<void> {
  const backing = opts.backing ? ['-B', opts.backing.path, '-F', opts.backing.format] : []
  await qemuImg([
    'convert', '-f', opts.sourceFormat, '-O', opts.targetFormat, ...formatOptions(opts.targetFormat),
    ...(opts.compress ? ['-c'] : []), ...backing, opts.source, opts.target,
  ])
}

/** Grows an image. Pass the format for raw images (see the note at the top of this file). */
export async function resizeImage(path: string, size: number, format?: ImageFormat): Promise<void> {
  await qemuImg(['resize', '-q', ...(format ? ['-f', format] : []), path, String(size)])
}

/** Consistency check of an image nobody has open. Exit codes 2 and 3 (corruptions, leaks) still carry the JSON report. */
export async function checkImage(path: string, format: ImageFormat): Promise<ImageCheck> {
  const raw = JSON.parse(await qemuImg(['check', '--output=json', '-f', format, path], [2, 3]))
  return { corruptions: raw.corruptions ?? 0, leaks: raw.leaks ?? 0, checkErrors: raw['check-errors'] ?? 0 }
}

/** One extent of `qemu-img map`: guest bytes [start, start+length) and whether they read as zeros / are allocated. */
export interface MapExtent {
  start: number
  length: number
  data: boolean
  zero: boolean
  /** 0 (or absent) when the image itself holds the extent, n when its n-th backing image does. */
  depth?: number
  /** False when no image of the chain allocates the extent (then depth is that of the chain's bottom); true when qemu-img does not say. */
  present?: boolean
  /** Where the data sits in the file at `depth` of the chain, when it is stored there as is (not compressed). */
  offset?: number
}

/** Where an image (through its backing chain) has data and where it reads as zeros, in guest offsets. */
export async function mapImage(path: string, format: ImageFormat): Promise<MapExtent[]> {
  const raw = JSON.parse(await qemuImg(['map', '--output=json', '-f', format, path])) as { start: number; length: number; data: boolean; zero: boolean; depth?: number; present?: boolean; offset?: number }[]
  return raw.map((e) => ({ start: e.start, length: e.length, data: e.data, zero: e.zero, depth: e.depth ?? 0, present: e.present ?? true, ...(e.offset === undefined ? {} : { offset: e.offset }) }))
}

/** The files of an image's backing chain, the image first (index = a map extent's depth). */
export async function imageChain(path: string, format: ImageFormat): Promise<{ path: string; format: string }[]> {
  const raw = JSON.parse(await qemuImg(['info', '--backing-chain', '--output=json', '-f', format, path])) as { filename: string; format: string }[]
  return raw.map((i) => ({ path: i.filename, format: i.format }))
}

/** What an untrusted image file declares beyond the basics: links to other files that opening it would follow. */
export interface ImageHeader extends ImageInfo {
  /** qcow2 external data file (a qcow2 whose data lives in another file). */
  dataFile?: string
  encrypted: boolean
}

/** Reads the header of an image file of a known format without opening its backing chain. */
export async function imageHeader(path: string, format: ImageFormat): Promise<ImageHeader> {
  const raw = JSON.parse(await qemuImg(['info', '--output=json', '-f', format, path]))
  const specific = raw['format-specific']?.data ?? {}
  return {
    ...infoOf(raw),
    dataFile: specific['data-file'],
    encrypted: raw.encrypted === true || specific.encrypt !== undefined,
  }
}

/** Copies the guest content of `source` into the existing image `target` (convert -n); `targetIsZero` skips writing zeros into a fresh target. */
export async function convertInto(opts: { source: string; sourceFormat: ImageFormat; target: string; targetFormat: ImageFormat; targetIsZero?: boolean }): Promise<void> {
  await qemuImg(['convert', '-n', ...(opts.targetIsZero ? ['--target-is-zero'] : []), '-f', opts.sourceFormat, '-O', opts.targetFormat, opts.source, opts.target])
}

/** Makes a qcow2 image build on `backing` (or on nothing) with its guest content unchanged: what the old chain held above `backing` is copied in. */
export async function rebaseImage(path: string, backing: { path: string; format: ImageFormat } | undefined): Promise<void> {
  await qemuImg(['rebase', '-q', '-f', 'qcow2', ...(backing ? ['-b', backing.path, '-F', backing.format] : ['-b', '']), path])
}

/** Writes an overlay's changes into its backing file (the overlay is left as it is; delete it afterwards). */
export async function commitImage(overlay: string, format: ImageFormat): Promise<void> {
  await qemuImg(['commit', '-q', '-d', '-f', format, overlay])
}
