// qemu-nbd serving one image on a private Unix socket, and a small NBD client for it: how the
// agent reads and writes the guest-visible content of a qcow2 (or any) image without FUSE or
// temporary raw copies. Only the fixed-newstyle handshake with NBD_OPT_GO and simple replies
// are spoken (no structured replies): READ, WRITE, WRITE_ZEROES, FLUSH, DISC.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { imageLockedError } from './errors.js'
import type { ImageFormat } from './img.js'
import { ByteQueue } from '../lib/byte-queue.js'
import { programPath } from '../lib/programs.js'

export const NBD_MAGIC = Buffer.from('NBDMAGIC')
export const IHAVEOPT = Buffer.from('IHAVEOPT')
const OPT_REPLY_MAGIC = 0x3e889045565a9n
const REQUEST_MAGIC = 0x25609513
const SIMPLE_REPLY_MAGIC = 0x67446698
const OPT_GO = 7
const REP_ACK = 1
const REP_INFO = 3
const INFO_EXPORT = 0
const FLAG_FIXED_NEWSTYLE = 1
const FLAG_NO_ZEROES = 2
const FLAG_SEND_WRITE_ZEROES = 1 << 6
const FLAG_READ_ONLY = 1 << 1

export enum NbdCmd {
  Read = 0,
  Write = 1,
  Disc = 2,
  Flush = 3,
  WriteZeroes = 6,
}

export class NbdError extends Error {
  constructor(
    message: string,
    readonly errno?: number,
  ) {
    super(message)
    this.name = 'NbdError'
  }
}

/** The 28-byte header of a transmission request (pure). */
export function encodeRequest(cmd: NbdCmd, handle: bigint, offset: number, length: number, flags = 0): Buffer {
  const b = Buffer.allocUnsafe(28)
  b.writeUInt32BE(REQUEST_MAGIC, 0)
  b.writeUInt16BE(flags, 4)
  b.writeUInt16BE(cmd, 6)
  b.writeBigUInt64BE(handle, 8)
  b.writeBigUInt64BE(BigInt(offset), 16)
  b.writeUInt32BE(length, 24)
  return b
}

/** The NBD_OPT_GO option for `name`, asking for no extra information (pure). */
export function encodeOptGo(name: string): Buffer {
  const n = Buffer.from(name)
  const b = Buffer.alloc(16 + 4 + n.length + 2)
  IHAVEOPT.copy(b, 0)
  b.writeUInt32BE(OPT_GO, 8)
  b.writeUInt32BE(4 + n.length + 2, 12)
  b.writeUInt32BE(n.length, 16)
  n.copy(b, 20)
  b.writeUInt16BE(0, 20 + n.length)
  return b
}

interface Pending {
  cmd: NbdCmd
  length: number
  resolve: (data: Buffer | undefined) => void
  reject: (err: Error) => void
}

/** A connected NBD client. Requests may be pipelined; replies are matched by handle. */
export class NbdClient {
  private readonly received = new ByteQueue()
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined
  private readonly pending = new Map<bigint, Pending>()
  private nextHandle = 1n
  private failure: Error | undefined
  size = 0
  flags = 0

  private constructor(private readonly socket: Socket) {
    socket.on('data', (c: Buffer) => this.onData(c))
    socket.on('error', (e) => this.fail(e))
    socket.on('close', () => this.fail(new NbdError('NBD connection closed')))
  }

  static async connect(path: string, exportName: string): Promise<NbdClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path, () => resolve(s))
      s.once('error', reject)
    })
    const client = new NbdClient(socket)
    try {
      await client.handshake(exportName)
    } catch (err) {
      socket.destroy()
      throw err
    }
    return client
  }

  get readOnly(): boolean {
    return (this.flags & FLAG_READ_ONLY) !== 0
  }

  private onData(c: Buffer): void {
    this.received.push(c)
    this.serveWaiter()
  }

  private serveWaiter(): void {
    const w = this.waiter
    if (!w || this.received.length < w.n) return
    this.waiter = undefined
    w.resolve(this.received.take(w.n))
  }


  private need(n: number): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure)
    if (this.received.length >= n) return Promise.resolve(this.received.take(n))
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject }
    })
  }

  private fail(err: Error): void {
    if (this.failure) return
    this.failure = err
    this.waiter?.reject(err)
    this.waiter = undefined
    for (const p of this.pending.values()) p.reject(err)
    this.pending.clear()
  }

  private async handshake(name: string): Promise<void> {
    const hello = await this.need(18)
    if (!hello.subarray(0, 8).equals(NBD_MAGIC) || !hello.subarray(8, 16).equals(IHAVEOPT)) throw new NbdError('not a newstyle NBD server')
    const serverFlags = hello.readUInt16BE(16)
    if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw new NbdError('NBD server is not fixed-newstyle')
    const clientFlags = Buffer.alloc(4)
    clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES))
    this.socket.write(clientFlags)
    this.socket.write(encodeOptGo(name))
    for (;;) {
      const h = await this.need(20)
      if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new NbdError('bad NBD option reply magic')
      const type = h.readUInt32BE(12)
      const data = await this.need(h.readUInt32BE(16))
      if (type === REP_ACK) break
      if (type === REP_INFO && data.length >= 12 && data.readUInt16BE(0) === INFO_EXPORT) {
        this.size = Number(data.readBigUInt64BE(2))
        this.flags = data.readUInt16BE(10)
      } else if (type & 0x80000000) {
        throw new NbdError(`NBD server refused export ${JSON.stringify(name)}: ${data.subarray(0).toString() || `error ${type & 0x7fffffff}`}`)
      }
    }
    void this.readReplies()
  }

  private async readReplies(): Promise<void> {
    try {
      for (;;) {
        const h = await this.need(16)
        if (h.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new NbdError('bad NBD reply magic')
        const errno = h.readUInt32BE(4)
        const handle = h.readBigUInt64BE(8)
        const p = this.pending.get(handle)
        if (!p) throw new NbdError(`NBD reply for unknown handle ${handle}`)
        this.pending.delete(handle)
        if (errno !== 0) {
          p.reject(new NbdError(`NBD ${NbdCmd[p.cmd] ?? p.cmd} failed with errno ${errno}`, errno))
          // A failed read's payload is not sent; anything else cannot be trusted any more.
          if (p.cmd === NbdCmd.Read) throw new NbdError(`NBD read failed with errno ${errno}`, errno)
          continue
        }
        p.resolve(p.cmd === NbdCmd.Read ? await this.need(p.length) : undefined)
      }
    } catch (err) {
      this.fail(err as Error)
      this.socket.destroy()
    }
  }

  private request(cmd: NbdCmd, offset: number, length: number, payload?: Buffer): Promise<Buffer | undefined> {
    if (this.failure) return Promise.reject(this.failure)
    const handle = this.nextHandle++
    return new Promise((resolve, reject) => {
      this.pending.set(handle, { cmd, length, resolve, reject })
      this.socket.write(encodeRequest(cmd, handle, offset, length))
      if (payload) this.socket.write(payload)
    })
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return (await this.request(NbdCmd.Read, offset, length))!
  }

  async write(offset: number, data: Buffer): Promise<void> {
    await this.request(NbdCmd.Write, offset, data.length, data)
  }

  /** Zeroes a range; the server may punch holes (NBD_CMD_FLAG_NO_HOLE is not set). */
  async writeZeroes(offset: number, length: number): Promise<void> {
    if (!(this.flags & FLAG_SEND_WRITE_ZEROES)) {
      for (let at = 0; at < length; at += 1 << 20) await this.write(offset + at, Buffer.alloc(Math.min(1 << 20, length - at)))
      return
    }
    await this.request(NbdCmd.WriteZeroes, offset, length)
  }

  async flush(): Promise<void> {
    await this.request(NbdCmd.Flush, 0, 0)
  }

  /** Polite disconnect (NBD_CMD_DISC, then close). */
  async close(): Promise<void> {
    if (!this.failure && !this.socket.destroyed) this.socket.write(encodeRequest(NbdCmd.Disc, 0n, 0, 0))
    this.socket.end()
    await new Promise<void>((resolve) => (this.socket.closed ? resolve() : this.socket.once('close', () => resolve())))
  }

  destroy(): void {
    this.socket.destroy()
  }
}

/** qemu-nbd exporting one image on a Unix socket in a private directory; it serves its client and exits. */
export class NbdServer {
  private stderr = ''
  private exited: Promise<number | null>

  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly socketPath: string,
  ) {
    child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)))
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)))
  }

  static readonly EXPORT = 'disk'

  /**
   * Starts qemu-nbd on `path` (format given explicitly, never probed) and connects to it.
   * Writable exports pass discards and detect zero writes, so zero regions stay thin.
   * Fails with ImageLockedError when another process (a running VM) holds the image.
   */
  static async open(path: string, format: ImageFormat, opts: { readOnly: boolean }): Promise<{ server: NbdServer; client: NbdClient }> {
    const dir = await mkdtemp(join(tmpdir(), 'flotilla-nbd-'))
    const socketPath = join(dir, 's')
    const args = [
      `--format=${format}`, `--socket=${socketPath}`, `--export-name=${NbdServer.EXPORT}`, '--cache=writeback', '--aio=threads',
      ...(opts.readOnly ? ['--read-only'] : ['--discard=unmap', '--detect-zeroes=unmap']),
      path,
    ]
    const child = spawn(programPath('qemu-nbd'), args, { stdio: ['ignore', 'ignore', 'pipe'] })
    const server = new NbdServer(child, dir, socketPath)
    child.once('error', () => undefined)
    let exitCode: number | null | undefined
    void server.exited.then((c) => (exitCode = c))
    const deadline = Date.now() + 15_000
    for (;;) {
      if (exitCode !== undefined) {
        await rm(dir, { recursive: true, force: true })
        throw imageLockedError(server.stderr) ?? new NbdError(`qemu-nbd ${args.join(' ')} failed: ${server.stderr.trim() || `exit ${exitCode}`}`)
      }
      try {
        const client = await NbdClient.connect(socketPath, NbdServer.EXPORT)
        return { server, client }
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline) {
          await server.stop()
          throw err
        }
        await new Promise((r) => setTimeout(r, 10))
      }
    }
  }

  /** Waits for qemu-nbd to exit after its client left (it flushes and closes the image); kills it if it lingers. */
  async stop(timeoutMs = 10_000): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs)
      await this.exited
      clearTimeout(timer)
    }
    await rm(this.dir, { recursive: true, force: true })
  }

  /** Stops it at once (error paths): the image is left as the last completed writes made it. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM')
    await this.stop(2000)
  }
}
