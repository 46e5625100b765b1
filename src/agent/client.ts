// How the API layer calls a host agent: by method name, with argument and result types from the
// contract (contract.ts), over a transport (today HTTP on the agent's Unix socket with the host's
// secret: socket-transport.ts; another host's agent over TLS can be one more).
import type { OutgoingHttpHeaders } from 'node:http'
import { Duplex, Readable, type Writable } from 'node:stream'
import type { Agent, AgentContract, ArgsOf, AgentFailure, AgentStream, CallArgs, CallName, CallResult, ConnectName, Contract, StreamHandlers, StreamName, StreamOut } from './contract.js'
import { AgentError, decodeFailure, encodeFailure } from './failure.js'

/** Carries calls, streams and connects to one agent, names and JSON arguments as given. */
export interface AgentTransport {
  /** One JSON call: the answer's status and its JSON body (`{result}` on 200, else a failure). */
  call(method: string, args: unknown): Promise<{ status: number; body: unknown }>
  /** A stream with `body` as its data in: the answer's status and bytes (a JSON failure unless 200). */
  stream(name: string, args: unknown, body?: Readable): Promise<{ status: number; answer: AgentStream }>
  /** A raw byte stream: the answer's status, and the socket (to close unless 200). */
  connect(name: string, args: unknown): Promise<{ status: number; socket: Duplex }>
}

/**
 * A handler's output in this process. The caller reads it as it would read the agent's HTTP
 * response, or calls `forward` before reading: the handler's writes then go straight into
 * `target` and call back once `target` has consumed them, so the handler may reuse a buffer as
 * soon as its write called back (writeOut). Once forwarded, it emits 'finish' when the handler
 * has ended and everything is in `target`. Read instead, it hands out copies, for the same reason.
 */
class LocalOutput extends Duplex implements StreamOut {
  complete = false
  status = 0
  headers: OutgoingHttpHeaders = {}
  private target?: Writable
  private onForwarded: (bytes: number) => void = () => undefined
  private reading = false
  /** A write held until the caller reads or forwards, or until the reader wants more. */
  private held?: () => void

  constructor() {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 })
  }

  writeHead(status: number, headers: OutgoingHttpHeaders = {}): this {
    this.status = status
    this.headers = headers
    this.emit('head')
    return this
  }

  forward(target: Writable, onForwarded: (bytes: number) => void): void {
    this.target = target
    this.onForwarded = onForwarded
    this.release()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.target) {
      this.onForwarded(chunk.length)
      this.target.write(chunk, (err) => callback(err))
    } else if (!this.reading) this.held = () => this._write(chunk, _encoding, callback)
    else if (this.push(Buffer.from(chunk))) callback()
    else this.held = callback
  }

  override _final(callback: () => void): void {
    this.complete = true
    if (!this.target) this.push(null)
    callback()
  }

  override _read(): void {
    this.reading = true
    this.release()
  }

  private release(): void {
    const held = this.held
    this.held = undefined
    held?.()
  }
}

/** Runs an in-process stream handler as the agent's server would: a failure before any output rejects, after it destroys the stream. */
function localStream(handler: (args: unknown, body: Readable, out: StreamOut) => Promise<void>, args: unknown, body?: Readable): Promise<AgentStream> {
  const out = new LocalOutput()
  return new Promise((resolve, reject) => {
    out.once('head', () => resolve(out))
    handler(JSON.parse(JSON.stringify(args ?? null)), body ?? Readable.from([]), out).catch((err: unknown) => {
      if (out.status) return void out.destroy(err as Error)
      reject(decodeFailure(encodeFailure(err), 500))
    })
  })
}

async function failureOf(answer: Readable, status: number): Promise<Error> {
  const chunks: Buffer[] = []
  for await (const c of answer) chunks.push(c as Buffer)
  return decodeFailure(JSON.parse(Buffer.concat(chunks).toString()) as AgentFailure, status)
}

export class AgentClient<C extends Contract = AgentContract> implements Agent<C> {
  constructor(
    private readonly transport: AgentTransport,
    /** The stream handlers of an agent running in this process. */
    private readonly local?: Partial<StreamHandlers<C>>,
  ) {}

  async call<M extends CallName<C>>(method: M, ...[args]: ArgsOf<CallArgs<M, C>>): Promise<CallResult<M, C>> {
    const { status, body } = await this.transport.call(method, args ?? null)
    if (status === 200) return (body as { result: CallResult<M, C> }).result
    throw decodeFailure(body as AgentFailure, status)
  }

  /**
   * A bulk transfer: `body` (if any) goes to the agent's stream handler, whose output comes back
   * as a stream. With the agent in this process (`local`), the bytes go straight from handler to
   * caller: a bulk stream always runs on the host holding the data (another host redirects the
   * client there), and an extra socket hop per byte costs a third of an export's throughput.
   */
  async stream<S extends StreamName<C>>(name: S, args: C['streams'][S], body?: Readable): Promise<AgentStream> {
    const handler = this.local?.[name] as ((args: unknown, body: Readable, out: StreamOut) => Promise<void>) | undefined
    if (handler) return localStream(handler, args, body)
    const { status, answer } = await this.transport.stream(name, args, body)
    if (status === 200) return answer
    throw await failureOf(answer, status)
  }

  /** A raw byte stream to something on the agent's host (a console socket). */
  async connect<K extends ConnectName<C>>(name: K, args: C['connects'][K]): Promise<Duplex> {
    const { status, socket } = await this.transport.connect(name, args)
    if (status === 200) return socket
    socket.destroy()
    throw new AgentError(`agent refused ${name}`, status)
  }

  failure(f: AgentFailure): Error {
    return decodeFailure(f, 500)
  }
}
