// A QMP client over QEMU's unix socket: newline-delimited JSON, a greeting, capabilities
// negotiation, then commands (answered in order, matched by id) interleaved with events.
import { EventEmitter } from 'node:events'
import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

export interface QmpEvent {
  event: string
  data: Record<string, any>
  timestamp: { seconds: number; microseconds: number }
}

export interface QmpVersion {
  major: number
  minor: number
  micro: number
}

/** QEMU refused a command: `qmpClass` is QMP's error class (GenericError, DeviceNotFound, …). */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${qmpClass}: ${desc}`)
    this.name = 'QmpError'
  }
}

export interface QmpConnectOptions {
  /** Keep retrying (socket not there yet, refused) and waiting for the greeting this long. */
  timeoutMs?: number
  /** Default timeout for each command. */
  commandTimeoutMs?: number
  /** Stop retrying, e.g. once the QEMU being waited for has exited. */
  signal?: AbortSignal
}

interface Pending {
  command: string
  resolve: (value: any) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

const RETRY_MS = 10
const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN'])

/**
 * Emits 'event' (QmpEvent) for every QMP event and 'close' once the connection is gone.
 * Commands pending at close reject, so a QEMU exiting mid-call fails the call cleanly.
 */
export class QmpClient extends EventEmitter {
  version: QmpVersion = { major: 0, minor: 0, micro: 0 }
  private readonly pending = new Map<number, Pending>()
  private nextId = 1
  private buffer = ''
  private isClosed = false
  private greeted?: (greeting: any) => void

  private constructor(
    private readonly socket: Socket,
    private readonly commandTimeoutMs: number,
  ) {
    super()
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => this.receive(chunk))
    socket.on('error', () => {}) // 'close' follows and reports it
    socket.on('close', () => this.shutDown('QEMU closed the QMP connection'))
  }

  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000)
    const socket = await connectWithRetry(path, deadline, opts.signal)
    const client = new QmpClient(socket, opts.commandTimeoutMs ?? 30_000)
    try {
      const greeting = await client.greeting(deadline - Date.now())
      client.version = greeting.QMP.version.qemu
      await client.execute('qmp_capabilities')
      return client
    } catch (err) {
      client.socket.destroy()
      throw err
    }
  }

  get closed(): boolean {
    return this.isClosed
  }

  /** Runs a command; resolves with its `return` value, rejects with QmpError, a timeout or a closed connection. */
  execute<T = any>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.isClosed) return Promise.reject(new Error(`QMP ${command}: the connection is closed`))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`QMP ${command}: no answer within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { command, resolve, reject, timer })
      this.socket.write(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + '\n')
    })
  }

  /**
   * The next event `name` that satisfies `predicate`. Call it before the command that causes
   * the event, since an event that already went by is not replayed.
   */
  waitForEvent(name: string, predicate: (event: QmpEvent) => boolean = () => true, timeoutMs = 30_000): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer)
        this.off('event', onEvent)
        this.off('close', onClose)
      }
      const onEvent = (event: QmpEvent): void => {
        if (event.event !== name || !predicate(event)) return
        done()
        resolve(event)
      }
      const onClose = (): void => {
        done()
        reject(new Error(`QMP connection closed while waiting for event ${name}`))
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`QMP event ${name} did not arrive within ${timeoutMs} ms`))
      }, timeoutMs)
      if (this.isClosed) return onClose()
      this.on('event', onEvent)
      this.on('close', onClose)
    })
  }

  /** Closes our side; QEMU keeps running and accepts the next client. */
  async close(): Promise<void> {
    if (this.isClosed) return
    const gone = new Promise((resolve) => this.socket.once('close', resolve))
    this.socket.destroy()
    await gone
  }

  private greeting(timeoutMs: number): Promise<any> {
    return new Promise((resolve, reject) => {
      const fail = (message: string) => () => {
        clearTimeout(timer)
        this.off('close', onClose)
        reject(new Error(message))
      }
      // Only one client is served at a time: a second one is accepted by the kernel but never greeted.
      const timer = setTimeout(fail(`no QMP greeting within ${timeoutMs} ms (is another client connected?)`), Math.max(timeoutMs, 0))
      const onClose = fail('QEMU closed the QMP connection before its greeting')
      this.once('close', onClose)
      this.greeted = (greeting) => {
        clearTimeout(timer)
        this.off('close', onClose)
        resolve(greeting)
      }
    })
  }

  private receive(chunk: string): void {
    this.buffer += chunk
    let newline: number
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim()
      this.buffer = this.buffer.slice(newline + 1)
      if (line) this.dispatch(line)
    }
  }

  private dispatch(line: string): void {
    let message: any
    try {
      message = JSON.parse(line)
    } catch {
      this.socket.destroy()
      return this.shutDown(`QMP sent something that is not JSON: ${line.slice(0, 200)}`)
    }
    if ('QMP' in message) return this.greeted?.(message)
    if ('event' in message) return void this.emit('event', message as QmpEvent)
    this.answer(message)
  }

  /** QMP answers in order; the id names the command, and an answer without one (a parse error) is the oldest's. */
  private answer(message: any): void {
    const id: number | undefined = 'id' in message ? message.id : this.pending.keys().next().value
    const pending = id === undefined ? undefined : this.pending.get(id)
    if (!pending) return // the answer to a command that already timed out
    this.pending.delete(id!)
    clearTimeout(pending.timer)
    if ('error' in message) pending.reject(new QmpError(pending.command, message.error.class, message.error.desc))
    else pending.resolve(message.return)
  }

  private shutDown(reason: string): void {
    if (this.isClosed) return
    this.isClosed = true
    for (const { command, reject, timer } of this.pending.values()) {
      clearTimeout(timer)
      reject(new Error(`QMP ${command}: ${reason} before answering`))
    }
    this.pending.clear()
    this.emit('close')
  }
}

async function connectWithRetry(path: string, deadline: number, signal?: AbortSignal): Promise<Socket> {
  for (;;) {
    signal?.throwIfAborted()
    try {
      return await connectOnce(path)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? ''
      if (!RETRYABLE.has(code)) throw err
      if (Date.now() >= deadline) throw new Error(`QMP socket ${path} not accepting connections before the deadline (${code})`)
      await sleep(RETRY_MS)
    }
  }
}

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path)
    socket.once('connect', () => {
      socket.off('error', reject)
      resolve(socket)
    })
    socket.once('error', reject)
  })
}
