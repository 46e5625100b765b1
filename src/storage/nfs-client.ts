// A userspace NFSv3 client for an SR's management (list, stat, space, mkdir, remove, rename): the
// kernels Flotilla runs on may have no NFS client (pool-lab.md §0), and QEMU's own libnfs does
// the data path. ONC RPC over TCP as RFC 5531 and 1813 have it, the messages encoded and decoded
// by json-pack's XDR codecs (RPC, record marking, MOUNT and NFSv3): this file only adds the
// transport, the portmapper lookup and path walking. AUTH_UNIX as root, from a privileged port,
// as servers that export to root expect.
import { randomInt } from 'node:crypto'
import { connect, type Socket } from 'node:net'
import { Reader } from '@jsonjoy.com/buffers/lib/Reader.js'
import { Writer } from '@jsonjoy.com/buffers/lib/Writer.js'
import {
  Nfsv3Decoder, Nfsv3DirOpArgs, Nfsv3Encoder, Nfsv3Fh, Nfsv3FsstatRequest, Nfsv3GetattrRequest, Nfsv3LookupRequest, Nfsv3MkdirRequest,
  Nfsv3ReaddirplusRequest, Nfsv3RemoveRequest, Nfsv3RenameRequest, Nfsv3RmdirRequest, Nfsv3Sattr, Nfsv3SetAtime, Nfsv3SetGid,
  Nfsv3SetMode, Nfsv3SetMtime, Nfsv3SetSize, Nfsv3SetUid, type Nfsv3Fattr, type Nfsv3Request,
} from '@jsonjoy.com/json-pack/lib/nfs/v3/index.js'
import { MountDecoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/MountDecoder.js'
import { MountEncoder } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/MountEncoder.js'
import { MountExportRequest, MountMntRequest, type MountExportResponse, type MountMntResponse } from '@jsonjoy.com/json-pack/lib/nfs/v3/mount/messages.js'
import { RmRecordDecoder } from '@jsonjoy.com/json-pack/lib/rm/RmRecordDecoder.js'
import { RmRecordEncoder } from '@jsonjoy.com/json-pack/lib/rm/RmRecordEncoder.js'
import { RpcMessageDecoder } from '@jsonjoy.com/json-pack/lib/rpc/RpcMessageDecoder.js'
import { RpcMessageEncoder } from '@jsonjoy.com/json-pack/lib/rpc/RpcMessageEncoder.js'
import { RpcAcceptedReplyMessage, RpcOpaqueAuth } from '@jsonjoy.com/json-pack/lib/rpc/messages.js'
import { XdrEncoder } from '@jsonjoy.com/json-pack/lib/xdr/XdrEncoder.js'

const PORTMAP = { prog: 100000, vers: 2, port: 111 }
const MOUNT = { prog: 100005, vers: 3 }
const NFS = { prog: 100003, vers: 3 }
const IPPROTO_TCP = 6
const AUTH_NULL = 0
const AUTH_UNIX = 1
const NF3DIR = 2
const NFS3ERR_NOENT = 2
const NFS3ERR_EXIST = 17

/** How long one call may take before the server counts as gone. */
export const NFS_CALL_TIMEOUT_MS = 10_000

/** NFS error statuses by name (RFC 1813 §2.6), for messages a user can read. */
const STATUS_NAMES: Record<number, string> = {
  1: 'NFS3ERR_PERM', 2: 'NFS3ERR_NOENT', 5: 'NFS3ERR_IO', 6: 'NFS3ERR_NXIO', 13: 'NFS3ERR_ACCES', 17: 'NFS3ERR_EXIST', 18: 'NFS3ERR_XDEV',
  20: 'NFS3ERR_NOTDIR', 21: 'NFS3ERR_ISDIR', 22: 'NFS3ERR_INVAL', 27: 'NFS3ERR_FBIG', 28: 'NFS3ERR_NOSPC', 30: 'NFS3ERR_ROFS',
  63: 'NFS3ERR_NAMETOOLONG', 66: 'NFS3ERR_NOTEMPTY', 69: 'NFS3ERR_DQUOT', 70: 'NFS3ERR_STALE', 10001: 'NFS3ERR_BADHANDLE',
  10004: 'NFS3ERR_NOTSUPP', 10006: 'NFS3ERR_SERVERFAULT', 10008: 'NFS3ERR_JUKEBOX',
}

/** A failure of the server or of the way to it; `status` is the NFS or MOUNT status when the server answered one. */
export class NfsError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message)
    this.name = 'NfsError'
  }

  get notFound(): boolean {
    return this.status === NFS3ERR_NOENT
  }
}

const statusError = (what: string, status: number) => new NfsError(`${what}: ${STATUS_NAMES[status] ?? `NFS status ${status}`}`, status)

function encodeAuthUnix(): RpcOpaqueAuth {
  const xdr = new XdrEncoder(new Writer(64))
  xdr.writeUnsignedInt(Math.floor(Date.now() / 1000) >>> 0)
  xdr.writeStr('flotilla')
  xdr.writeUnsignedInt(0) // uid root
  xdr.writeUnsignedInt(0) // gid root
  xdr.writeUnsignedInt(0) // no other groups
  return new RpcOpaqueAuth(AUTH_UNIX, new Reader(xdr.writer.flush()))
}

const NO_AUTH = new RpcOpaqueAuth(AUTH_NULL, new Reader(new Uint8Array(0)))

/** One TCP connection to one RPC program: calls matched to replies by xid. */
class RpcConnection {
  private nextXid = randomInt(1, 2 ** 31)
  private readonly waiting = new Map<number, { resolve: (r: Reader) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>()
  private readonly records = new RmRecordDecoder()
  private readonly rpcDecoder = new RpcMessageDecoder()
  private failure: Error | undefined

  private constructor(
    private readonly socket: Socket,
    private readonly what: string,
  ) {
    socket.on('data', (chunk: Buffer) => this.received(chunk))
    socket.on('error', (err) => this.fail(new NfsError(`${what}: ${err.message}`)))
    socket.on('close', () => this.fail(new NfsError(`${what}: the connection closed`)))
  }

  /** Connects from a privileged port (servers exporting to root may insist), or any port when none is free. */
  static async open(host: string, port: number, what: string): Promise<RpcConnection> {
    for (let attempt = 0; ; attempt++) {
      const localPort = attempt < 8 ? randomInt(600, 1024) : undefined
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect({ host, port, localPort, timeout: NFS_CALL_TIMEOUT_MS })
          s.once('connect', () => {
            s.setTimeout(0)
            s.setNoDelay(true)
            resolve(s)
          })
          s.once('timeout', () => {
            s.destroy()
            reject(new NfsError(`${what}: no answer from ${host}:${port} within ${NFS_CALL_TIMEOUT_MS / 1000} s`))
          })
          s.once('error', reject)
        })
        return new RpcConnection(socket, what)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE' && localPort !== undefined) continue
        if (err instanceof NfsError) throw err
        throw new NfsError(`${what}: cannot reach ${host}:${port}: ${(err as Error).message}`)
      }
    }
  }

  call(prog: { prog: number; vers: number }, proc: number, params: Uint8Array): Promise<Reader> {
    if (this.failure) return Promise.reject(this.failure)
    const xid = this.nextXid
    this.nextXid = (this.nextXid + 1) >>> 0
    const message = new RpcMessageEncoder(new Writer(256 + params.length)).encodeCall(xid, prog.prog, prog.vers, proc, encodeAuthUnix(), NO_AUTH, params)
    const record = new RmRecordEncoder(new Writer(message.length + 8)).encodeRecord(message)
    return new Promise<Reader>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(xid)
        reject(new NfsError(`${this.what}: no answer within ${NFS_CALL_TIMEOUT_MS / 1000} s`))
      }, NFS_CALL_TIMEOUT_MS)
      this.waiting.set(xid, { resolve, reject, timer })
      this.socket.write(record)
    })
  }

  close(): void {
    this.socket.destroy()
  }

  private received(chunk: Buffer): void {
    this.records.push(new Uint8Array(chunk))
    for (let record = this.records.readRecord(); record; record = this.records.readRecord()) {
      const reply = this.rpcDecoder.decodeMessage(record)
      if (!reply || !('xid' in reply)) continue
      const call = this.waiting.get(reply.xid)
      if (!call) continue
      this.waiting.delete(reply.xid)
      clearTimeout(call.timer)
      if (reply instanceof RpcAcceptedReplyMessage && reply.stat === 0) call.resolve(reply.results ?? new Reader(new Uint8Array(0)))
      else call.reject(new NfsError(`${this.what}: the server refused the call (${reply instanceof RpcAcceptedReplyMessage ? `accept status ${reply.stat}` : 'rejected'})`))
    }
  }

  private fail(err: Error): void {
    this.failure ??= err
    for (const [xid, call] of this.waiting) {
      clearTimeout(call.timer)
      call.reject(this.failure)
      this.waiting.delete(xid)
    }
  }
}

/** The port of an RPC program on `host`, from its portmapper. */
async function portOf(host: string, prog: { prog: number; vers: number }): Promise<number> {
  const rpc = await RpcConnection.open(host, PORTMAP.port, `the portmapper of ${host}`)
  try {
    const xdr = new XdrEncoder(new Writer(16))
    for (const n of [prog.prog, prog.vers, IPPROTO_TCP, 0]) xdr.writeUnsignedInt(n)
    const reply = await rpc.call(PORTMAP, 3, xdr.writer.flush())
    const port = reply.u32()
    if (port === 0) throw new NfsError(`${host} runs no RPC program ${prog.prog} version ${prog.vers} over TCP`)
    return port
  } finally {
    rpc.close()
  }
}

/** MOUNT protocol: the exports of a server (SR.probe) and the root handle of one. */
async function mountCall<T>(host: string, proc: number, request: MountMntRequest | MountExportRequest): Promise<T> {
  const rpc = await RpcConnection.open(host, await portOf(host, MOUNT), `the mount service of ${host}`)
  try {
    const reply = await rpc.call(MOUNT, proc, new MountEncoder(new Writer(1100)).encodeMessage(request, proc, true))
    return new MountDecoder().decodeMessage(reply, proc, false) as T
  } finally {
    rpc.close()
  }
}

/** The directories `host` exports. */
export async function listExports(host: string): Promise<string[]> {
  const res = await mountCall<MountExportResponse>(host, 5, new MountExportRequest())
  const out: string[] = []
  for (let node = res.exports; node; node = node.next) out.push(node.dir)
  return out
}

export interface NfsStat {
  isDirectory: boolean
  size: number
  /** Bytes the file takes on the server (a thin image's real size). */
  used: number
}

const statOf = (a: Nfsv3Fattr): NfsStat => ({ isDirectory: a.type === NF3DIR, size: Number(a.size), used: Number(a.used) })

const SET_NOTHING = () => new Nfsv3Sattr(new Nfsv3SetMode(true, 0o700), new Nfsv3SetUid(false), new Nfsv3SetGid(false), new Nfsv3SetSize(false), new Nfsv3SetAtime(0), new Nfsv3SetMtime(0))

/** A mounted export: paths are relative to its root ('' is the root), '/'-separated. */
export class NfsExport {
  private constructor(
    readonly host: string,
    readonly exportPath: string,
    private readonly rpc: RpcConnection,
    private readonly root: Nfsv3Fh,
  ) {}

  static async mount(host: string, exportPath: string): Promise<NfsExport> {
    const res = await mountCall<MountMntResponse>(host, 1, new MountMntRequest(exportPath))
    if (res.status !== 0 || !res.mountinfo) throw new NfsError(`mounting ${host}:${exportPath}: MOUNT status ${res.status}${res.status === 2 ? ' (no such export)' : res.status === 13 ? ' (permission denied)' : ''}`, res.status)
    const root = new Nfsv3Fh(res.mountinfo.fhandle.data.subarray())
    return new NfsExport(host, exportPath, await RpcConnection.open(host, await portOf(host, NFS), `the NFS server ${host}`), root)
  }

  close(): void {
    this.rpc.close()
  }

  private async nfs<T extends { status: number }>(proc: number, request: Nfsv3Request, what: string): Promise<T> {
    const reply = await this.rpc.call(NFS, proc, new Nfsv3Encoder(new Writer(512)).encodeMessage(request, proc, true))
    const res = new Nfsv3Decoder().decodeMessage(reply, proc, false) as unknown as T
    if (res.status !== 0) throw statusError(`${what} on ${this.host}:${this.exportPath}`, res.status)
    return res
  }

  private async handle(path: string): Promise<Nfsv3Fh> {
    let fh = this.root
    for (const name of path.split('/').filter(Boolean)) {
      const res = await this.nfs<{ status: number; resok: { object: Nfsv3Fh } }>(3, new Nfsv3LookupRequest(new Nfsv3DirOpArgs(fh, name)), `looking up ${path}`)
      fh = res.resok.object
    }
    return fh
  }

  /** The directory handle and last name of a path. */
  private async parent(path: string): Promise<Nfsv3DirOpArgs> {
    const parts = path.split('/').filter(Boolean)
    const name = parts.pop()
    if (!name) throw new NfsError(`${path || 'the export root'} has no parent directory`)
    return new Nfsv3DirOpArgs(await this.handle(parts.join('/')), name)
  }

  /** What is at `path`, or undefined if nothing is. */
  async stat(path: string): Promise<NfsStat | undefined> {
    try {
      const res = await this.nfs<{ status: number; resok: { objAttributes: Nfsv3Fattr } }>(1, new Nfsv3GetattrRequest(await this.handle(path)), `stat of ${path}`)
      return statOf(res.resok.objAttributes)
    } catch (err) {
      if (err instanceof NfsError && err.notFound) return undefined
      throw err
    }
  }

  /** The names in a directory with what each is. */
  async list(path: string): Promise<Map<string, NfsStat>> {
    const dir = await this.handle(path)
    const out = new Map<string, NfsStat>()
    let cookie = 0n
    let verifier: Uint8Array = new Uint8Array(8)
    for (;;) {
      type Entry = { name: string; cookie: bigint; nameAttributes: { attributesFollow: boolean; attributes?: Nfsv3Fattr }; nextentry?: Entry }
      const res = await this.nfs<{ status: number; resok: { cookieverf: Uint8Array; reply: { eof: boolean; entries?: Entry } } }>(17, new Nfsv3ReaddirplusRequest(dir, cookie, verifier, 8192, 32768), `listing ${path || '/'}`)
      for (let e = res.resok.reply.entries; e; e = e.nextentry) {
        cookie = e.cookie
        if (e.name === '.' || e.name === '..') continue
        const attrs = e.nameAttributes.attributes
        out.set(e.name, attrs ? statOf(attrs) : { isDirectory: false, size: 0, used: 0 })
      }
      verifier = res.resok.cookieverf
      if (res.resok.reply.eof || !res.resok.reply.entries) return out
    }
  }

  /** Total and available bytes of the export's filesystem. */
  async space(): Promise<{ total: number; free: number; available: number }> {
    const res = await this.nfs<{ status: number; resok: { tbytes: bigint; fbytes: bigint; abytes: bigint } }>(18, new Nfsv3FsstatRequest(this.root), 'space')
    return { total: Number(res.resok.tbytes), free: Number(res.resok.fbytes), available: Number(res.resok.abytes) }
  }

  /** Makes a directory and its missing parents (mode 0700); one already there is fine. */
  async mkdirs(path: string): Promise<void> {
    let fh = this.root
    for (const name of path.split('/').filter(Boolean)) {
      try {
        fh = (await this.nfs<{ status: number; resok: { object: Nfsv3Fh } }>(3, new Nfsv3LookupRequest(new Nfsv3DirOpArgs(fh, name)), `looking up ${path}`)).resok.object
        continue
      } catch (err) {
        if (!(err instanceof NfsError && err.notFound)) throw err
      }
      try {
        await this.nfs(9, new Nfsv3MkdirRequest(new Nfsv3DirOpArgs(fh, name), SET_NOTHING()), `making directory ${path}`)
      } catch (err) {
        if (!(err instanceof NfsError && err.status === NFS3ERR_EXIST)) throw err
      }
      fh = (await this.nfs<{ status: number; resok: { object: Nfsv3Fh } }>(3, new Nfsv3LookupRequest(new Nfsv3DirOpArgs(fh, name)), `looking up ${path}`)).resok.object
    }
  }

  /** Removes a file; one already gone is fine. */
  async remove(path: string): Promise<void> {
    try {
      await this.nfs(12, new Nfsv3RemoveRequest(await this.parent(path)), `removing ${path}`)
    } catch (err) {
      if (!(err instanceof NfsError && err.notFound)) throw err
    }
  }

  /** Removes a directory and everything in it; one already gone is fine. */
  async removeTree(path: string): Promise<void> {
    let entries: Map<string, NfsStat>
    try {
      entries = await this.list(path)
    } catch (err) {
      if (err instanceof NfsError && err.notFound) return
      throw err
    }
    for (const [name, st] of entries) await (st.isDirectory ? this.removeTree(`${path}/${name}`) : this.remove(`${path}/${name}`))
    try {
      await this.nfs(13, new Nfsv3RmdirRequest(await this.parent(path)), `removing directory ${path}`)
    } catch (err) {
      if (!(err instanceof NfsError && err.notFound)) throw err
    }
  }

  /** Renames a file, replacing what `to` named (atomic on the server, as rename(2)). */
  async rename(from: string, to: string): Promise<void> {
    await this.nfs(14, new Nfsv3RenameRequest(await this.parent(from), await this.parent(to)), `renaming ${from} to ${to}`)
  }
}
