// The protocol node under an image's format node, from where the image is: a local file, an
// nfs://server/path URL that QEMU's own NFS client (libnfs) opens, or an RBD image as qemu-img
// names one (rbd:pool/namespace/image[@snapshot]:conf=…:id=…, librbd), in QMP's blockdev-add terms.

export interface ProtocolNode {
  /** The driver and where it finds the image. */
  where: Record<string, unknown>
  /** How it does its I/O: page-cache I/O on a thread pool for files (see argv.ts blockNodes). */
  tuning: Record<string, unknown>
}

const NFS_URL = /^nfs:\/\/([^/?#]+)(\/[^?#]*)$/

const RBD_NAME = /^rbd:([\w.-]+)\/([\w.-]+)\/([\w.-]+)(?:@([\w.-]+))?((?::(?:conf|id)=[^:]+)*)$/

/** Where a disk can be besides a local file: an NFS URL or an RBD image. */
export const isNetworkImage = (path: string) => NFS_URL.test(path) || RBD_NAME.test(path)

export function protocolNode(path: string): ProtocolNode {
  const nfs = NFS_URL.exec(path)
  if (nfs) return { where: { driver: 'nfs', server: { type: 'inet', host: nfs[1] }, path: decodeURIComponent(nfs[2]!) }, tuning: {} }
  const rbd = RBD_NAME.exec(path)
  if (rbd) {
    const options = Object.fromEntries([...rbd[5]!.matchAll(/:(conf|id)=([^:]+)/g)].map((m) => [m[1]!, m[2]!]))
    return { where: { driver: 'rbd', pool: rbd[1], namespace: rbd[2], image: rbd[3], snapshot: rbd[4], conf: options.conf, user: options.id }, tuning: {} }
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(path)) throw new Error(`QEMU has no protocol for ${path}`)
  return { where: { driver: 'file', filename: path }, tuning: { cache: { direct: false }, aio: 'threads' } }
}

/** Options as -blockdev's key=value list takes them: nested objects as dotted keys, flags as on/off. */
export function flatten(options: Record<string, unknown>, prefix = ''): Record<string, string | number> {
  const out: Record<string, string | number> = {}
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue
    if (typeof value === 'object' && value !== null) Object.assign(out, flatten(value as Record<string, unknown>, `${prefix}${key}.`))
    else out[`${prefix}${key}`] = typeof value === 'boolean' ? (value ? 'on' : 'off') : (value as string | number)
  }
  return out
}
