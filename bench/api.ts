// API throughput, event-latency and login-latency benchmark: a real daemon (with its etcd)
// against a bare Node.js HTTP server that answers with the daemon's own bytes, so the ratio shows
// what the daemon costs beyond HTTP itself; logins against their password hash alone, run in this
// process. It only prints figures; it never fails on them.
//
//   npm run bench:api           (BENCH_SECONDS=10 for longer runs; default 5 s per figure)
import { spawn, type ChildProcess } from 'node:child_process'
import { Agent, request, type IncomingHttpHeaders } from 'node:http'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { call, Daemon, login, PASSWORD } from '../test/helpers/daemon.js'
import { checkPassword, hashPassword } from '../src/xapi/accounts.js'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const WARMUP_MS = 500
const CLIENTS = 8
const VM_COUNT = 1000
const SEED_CONCURRENCY = 16
const EVENT_SAMPLES = 200
const LOGIN_SAMPLES = 40

const AIM_READ_RATIO = 0.5
const AIM_WRITES = 1000
const AIM_EVENT_P50_MS = 5
const AIM_LOGIN_RATIO = 2

interface Target {
  port: number
  path: string
  contentType: string
}

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  /** performance.now() when the last byte of the response arrived. */
  at: number
}

/** One POST on a (keep-alive) agent, read to the end. */
function post(agent: Agent, target: Target, body: Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      { agent, host: '127.0.0.1', port: target.port, path: target.path, method: 'POST', headers: { 'content-type': target.contentType, 'content-length': body.length } },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), at: performance.now() }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

const jsonTarget = (port: number): Target => ({ port, path: '/jsonrpc', contentType: 'application/json' })
const xmlTarget = (port: number): Target => ({ port, path: '/', contentType: 'text/xml' })

function jsonBody(method: string, params: unknown[]): Buffer {
  return Buffer.from(JSON.stringify({ jsonrpc: '2.0', method, params, id: 0 }))
}

/** XML-RPC for string parameters, which is all this benchmark sends. */
function xmlBody(method: string, params: string[]): Buffer {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
  const ps = params.map((p) => `<param><value><string>${esc(p)}</string></value></param>`).join('')
  return Buffer.from(`<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>${ps}</params></methodCall>`)
}

/** The JSON-RPC result of a reply, or an exception carrying the XenAPI error. */
function jsonResult<T>(reply: Reply): T {
  const r = JSON.parse(reply.body.toString('utf8')) as { result?: T; error?: { message: string; data: string[] } }
  if (r.error) throw new Error(`XenAPI error ${r.error.message}(${r.error.data.join(', ')})`)
  return r.result as T
}

interface Run {
  calls: number
  seconds: number
  mismatches: number
}

/**
 * CLIENTS workers, each sending back-to-back requests on the shared keep-alive agent for `ms`.
 * A reply whose size differs from `expectBytes` (if given) counts as a mismatch, which catches
 * errors answered in place of the measured result.
 */
async function drive(agent: Agent, target: Target, body: () => Buffer, ms: number, expectBytes?: number): Promise<Run> {
  let calls = 0
  let mismatches = 0
  const t0 = performance.now()
  const end = t0 + ms
  const worker = async () => {
    while (performance.now() < end) {
      const r = await post(agent, target, body())
      if (r.status !== 200 || (expectBytes !== undefined && r.body.length !== expectBytes)) mismatches++
      calls++
    }
  }
  await Promise.all(Array.from({ length: CLIENTS }, worker))
  return { calls, seconds: (performance.now() - t0) / 1000, mismatches }
}

/** A warm-up (which also opens the keep-alive connections), then the measured run. */
async function measure(target: Target, body: () => Buffer, ms: number, expectBytes?: number): Promise<Run> {
  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS })
  try {
    await drive(agent, target, body, WARMUP_MS, expectBytes)
    return await drive(agent, target, body, ms, expectBytes)
  } finally {
    agent.destroy()
  }
}

// The bare server runs in its own process so that it does not compete with the load generator
// for this event loop, just as the daemon does not. It answers every POST, once the request
// body has been read (as the daemon does), with whatever body and headers it was last handed.
const BARE_SERVER = `
const http = require('node:http')
let body = Buffer.alloc(0)
let headers = {}
const server = http.createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    res.writeHead(200, { ...headers, 'content-length': body.length })
    res.end(body)
  })
})
server.keepAliveTimeout = 5000
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }))
process.on('message', (m) => {
  body = Buffer.from(m.body, 'base64')
  headers = m.headers
  process.send({ ok: true })
})
process.on('disconnect', () => process.exit(0))
`

class BareServer {
  port = 0
  private constructor(readonly child: ChildProcess) {}

  static async start(): Promise<BareServer> {
    const child = spawn(process.execPath, ['-e', BARE_SERVER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    const bare = new BareServer(child)
    bare.port = ((await bare.next()) as { port: number }).port
    return bare
  }

  private next(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`bare server exited with ${code}`))
      this.child.once('exit', onExit)
      this.child.once('message', (m) => {
        this.child.off('exit', onExit)
        resolve(m)
      })
    })
  }

  /** Makes the server answer with exactly this captured reply (minus per-connection headers). */
  async serve(reply: Reply): Promise<void> {
    const headers: Record<string, string | string[]> = {}
    for (const [k, v] of Object.entries(reply.headers))
      if (v !== undefined && !['date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding'].includes(k)) headers[k] = v
    const ack = this.next()
    this.child.send({ body: reply.body.toString('base64'), headers })
    await ack
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }
}

async function seed(url: string, session: string): Promise<string[]> {
  const refs: string[] = []
  let next = 0
  const worker = async () => {
    for (let i = next++; i < VM_COUNT; i = next++) {
      refs[i] = await call<string>(url, 'VM.create', session, { name_label: `bench-vm-${String(i).padStart(4, '0')}`, name_description: 'seeded by bench/api' })
    }
  }
  await Promise.all(Array.from({ length: SEED_CONCURRENCY }, worker))
  return refs
}

interface ReadFigure {
  label: string
  bytes: number
  daemon: number
  bare: number
  mismatches: number
}

/** Captures the daemon's reply to one call, then measures the daemon and the bare server on it. */
async function readFigure(label: string, daemonTarget: Target, bare: BareServer, body: Buffer): Promise<ReadFigure> {
  const agent = new Agent({ keepAlive: false })
  const captured = await post(agent, daemonTarget, body)
  agent.destroy()
  const head = captured.body.subarray(0, 200).toString()
  if (captured.status !== 200 || !(head.startsWith('{"jsonrpc":"2.0","result"') || head.includes('<name>Status</name><value>Success</value>'))) throw new Error(`${label}: the daemon did not succeed: ${captured.body.subarray(0, 300).toString()}`)
  await bare.serve(captured)
  const bytes = captured.body.length
  // Half the time each in the order daemon, bare, bare, daemon, so that drifting background load
  // on the machine affects both sides alike rather than skewing the ratio.
  const bareTarget = { ...daemonTarget, port: bare.port }
  const runs: { daemon: Run[]; bare: Run[] } = { daemon: [], bare: [] }
  for (const side of ['daemon', 'bare', 'bare', 'daemon'] as const)
    runs[side].push(await measure(side === 'daemon' ? daemonTarget : bareTarget, () => body, (SECONDS * 1000) / 2, bytes))
  const rate = (rs: Run[]) => rs.reduce((n, r) => n + r.calls, 0) / rs.reduce((n, r) => n + r.seconds, 0)
  const mismatches = [...runs.daemon, ...runs.bare].reduce((n, r) => n + r.mismatches, 0)
  const [d, b] = [rate(runs.daemon), rate(runs.bare)]
  console.log(`  ${label}: daemon ${d.toFixed(0)}/s, bare ${b.toFixed(0)}/s`)
  return { label, bytes, daemon: d, bare: b, mismatches }
}

/** Writers each rename their own VMs in turn, so they measure throughput rather than conflicts. */
async function writeFigure(port: number, session: string, refs: string[]): Promise<{ rate: number; mismatches: number }> {
  let n = 0
  const body = () => {
    const i = n++
    return jsonBody('VM.set_name_label', [session, refs[i % refs.length], `bench-write-${i}`])
  }
  const run = await measure(jsonTarget(port), body, SECONDS * 1000)
  return { rate: run.calls / run.seconds, mismatches: run.mismatches }
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

/**
 * One client long-polls event.from; another renames a VM to a fresh name and notes when the
 * write was acknowledged. The sample is the time from that acknowledgement to the arrival of
 * the event.from reply carrying the new name. Each client has its own connection.
 */
async function eventLatency(port: number, session: string, ref: string): Promise<{ samples: number[]; fromSend: number[]; early: number; missed: number }> {
  const target = jsonTarget(port)
  const listenAgent = new Agent({ keepAlive: true, maxSockets: 1 })
  const writeAgent = new Agent({ keepAlive: true, maxSockets: 1 })
  let waiting: { name: string; arrived: (at: number) => void } | undefined
  let stopped = false
  let token = jsonResult<{ token: string }>(await post(listenAgent, target, jsonBody('event.from', [session, ['VM'], '', 30.0]))).token
  const listener = (async () => {
    while (!stopped) {
      const reply = await post(listenAgent, target, jsonBody('event.from', [session, ['VM'], token, 30.0]))
      const batch = jsonResult<{ events: { snapshot?: { name_label?: string } }[]; token: string }>(reply)
      token = batch.token
      const w = waiting
      if (w && batch.events.some((e) => e.snapshot?.name_label === w.name)) w.arrived(reply.at)
    }
  })().catch((err: unknown) => {
    if (!stopped) throw err
  })

  const samples: number[] = []
  const fromSend: number[] = []
  let early = 0
  let missed = 0
  try {
    for (let i = 0; i < EVENT_SAMPLES; i++) {
      // Let the listener re-arm its long poll, so each sample sees a waiting event.from.
      await sleep(10)
      const name = `bench-event-${i}-${process.pid}`
      const arrival = new Promise<number>((resolve) => (waiting = { name, arrived: resolve }))
      const sent = performance.now()
      const ack = await post(writeAgent, target, jsonBody('VM.set_name_label', [session, ref, name]))
      jsonResult(ack)
      const at = await Promise.race([arrival, sleep(5000).then(() => undefined)])
      waiting = undefined
      if (at === undefined) {
        missed++
        continue
      }
      // The event can beat the acknowledgement: the daemon wakes watchers and the writer together.
      if (at < ack.at) early++
      samples.push(Math.max(0, at - ack.at))
      fromSend.push(at - sent)
    }
  } finally {
    stopped = true
    listenAgent.destroy()
    writeAgent.destroy()
    await listener
  }
  const ascending = (xs: number[]) => xs.sort((a, b) => a - b)
  return { samples: ascending(samples), fromSend: ascending(fromSend), early, missed }
}

/**
 * Back-to-back session.login_with_password + session.logout round trips on one connection, and
 * the password check alone (the same scrypt at the same cost, in this process): the ratio is
 * what a login costs beyond its deliberately slow hash. Interleaved daemon, hash, hash, daemon
 * as the read figures are, so that drifting load affects both alike.
 */
async function loginLatency(port: number): Promise<{ daemon: number[]; hash: number[] }> {
  const target = jsonTarget(port)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const stored = await hashPassword(PASSWORD)
  const rounds = {
    daemon: async () => {
      const session = jsonResult<string>(await post(agent, target, jsonBody('session.login_with_password', ['root', PASSWORD, '1.0', 'bench/api'])))
      jsonResult(await post(agent, target, jsonBody('session.logout', [session])))
    },
    hash: async () => {
      if (!(await checkPassword(stored, PASSWORD))) throw new Error('the password check failed')
    },
  }
  const samples: { daemon: number[]; hash: number[] } = { daemon: [], hash: [] }
  try {
    await rounds.daemon()
    await rounds.hash()
    for (const side of ['daemon', 'hash', 'hash', 'daemon'] as const) {
      for (let i = 0; i < LOGIN_SAMPLES / 2; i++) {
        const t0 = performance.now()
        await rounds[side]()
        samples[side].push(performance.now() - t0)
      }
    }
  } finally {
    agent.destroy()
  }
  const ascending = (xs: number[]) => xs.sort((a, b) => a - b)
  return { daemon: ascending(samples.daemon), hash: ascending(samples.hash) }
}

const pad = (s: string, n: number) => s.padEnd(n)
const lpad = (s: string, n: number) => s.padStart(n)
const verdict = (ok: boolean) => (ok ? 'meets aim' : 'BELOW AIM')

async function main(): Promise<void> {
  const daemon = new Daemon()
  let bare: BareServer | undefined
  let cleaned: Promise<void> | undefined
  const cleanup = () => (cleaned ??= (async () => {
    bare?.kill()
    await daemon.dispose()
  })())
  process.once('SIGINT', () => {
    console.error('\ninterrupted; stopping the daemon and the bare server')
    void cleanup().finally(() => process.exit(130))
  })

  try {
    console.log(`starting the daemon and the bare server (${CLIENTS} clients, ${SECONDS} s per figure, each run after a ${WARMUP_MS} ms warm-up)`)
    ;[bare] = await Promise.all([BareServer.start(), daemon.start()])
    const port = daemon.httpPort
    const session = await login(daemon.url)

    let t0 = performance.now()
    const refs = await seed(daemon.url, session)
    const seedSeconds = (performance.now() - t0) / 1000
    console.log(`seeded ${VM_COUNT} VMs in ${seedSeconds.toFixed(1)} s (${(VM_COUNT / seedSeconds).toFixed(0)} VM.create/s at concurrency ${SEED_CONCURRENCY})`)

    const vm = refs[0]!
    console.log('reads:')
    const reads = [
      await readFigure('VM.get_record       JSON-RPC', jsonTarget(port), bare, jsonBody('VM.get_record', [session, vm])),
      await readFigure('VM.get_record       XML-RPC ', xmlTarget(port), bare, xmlBody('VM.get_record', [session, vm])),
      await readFigure('VM.get_all_records  JSON-RPC', jsonTarget(port), bare, jsonBody('VM.get_all_records', [session])),
      await readFigure('VM.get_all_records  XML-RPC ', xmlTarget(port), bare, xmlBody('VM.get_all_records', [session])),
    ]
    console.log('writes:')
    const writes = await writeFigure(port, session, refs.slice(1))
    console.log(`  VM.set_name_label: ${writes.rate.toFixed(0)}/s`)
    console.log(`event latency (${EVENT_SAMPLES} samples):`)
    t0 = performance.now()
    const ev = await eventLatency(port, session, vm)
    console.log(`  done in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    console.log(`login latency (${LOGIN_SAMPLES} logins with logout, ${LOGIN_SAMPLES} password checks alone):`)
    const logins = await loginLatency(port)

    const line = '-'.repeat(92)
    console.log(`\n${line}`)
    console.log(`${pad('read (calls/s)', 30)}${lpad('reply', 10)}${lpad('daemon/s', 11)}${lpad('bare/s', 11)}${lpad('ratio', 9)}   aim ≥ ${AIM_READ_RATIO * 100}%`)
    for (const r of reads) {
      const ratio = r.daemon / r.bare
      const size = r.bytes >= 1024 * 1024 ? `${(r.bytes / 1024 / 1024).toFixed(1)} MiB` : r.bytes >= 1024 ? `${(r.bytes / 1024).toFixed(1)} KiB` : `${r.bytes} B`
      const note = r.mismatches ? ` (${r.mismatches} unexpected replies)` : ''
      console.log(`${pad(r.label, 30)}${lpad(size, 10)}${lpad(r.daemon.toFixed(0), 11)}${lpad(r.bare.toFixed(0), 11)}${lpad(`${(ratio * 100).toFixed(1)}%`, 9)}   ${verdict(ratio >= AIM_READ_RATIO)}${note}`)
    }
    console.log(line)
    const wnote = writes.mismatches ? ` (${writes.mismatches} unexpected replies)` : ''
    console.log(`${pad('VM.set_name_label (writes/s)', 51)}${lpad(writes.rate.toFixed(0), 11)}${lpad(`aim ${AIM_WRITES}`, 20)}   ${verdict(writes.rate >= AIM_WRITES)}${wnote}`)
    console.log(line)
    if (ev.samples.length > 0) {
      const [p50, p90, p99] = [50, 90, 99].map((p) => percentile(ev.samples, p))
      console.log(`${pad('event.from latency after write ack', 40)}p50 ${p50!.toFixed(2)} ms   p90 ${p90!.toFixed(2)} ms   p99 ${p99!.toFixed(2)} ms   aim p50 ≤ ${AIM_EVENT_P50_MS} ms   ${verdict(p50! <= AIM_EVENT_P50_MS)}`)
    }
    if (ev.fromSend.length > 0) {
      const [p50, p90, p99] = [50, 90, 99].map((p) => percentile(ev.fromSend, p))
      console.log(`${pad('  (from the write request, for context)', 40)}p50 ${p50!.toFixed(2)} ms   p90 ${p90!.toFixed(2)} ms   p99 ${p99!.toFixed(2)} ms`)
    }
    console.log(`  ${ev.samples.length} samples; ${ev.early} arrived before the write's ack (counted as 0 ms); ${ev.missed} not seen within 5 s`)
    console.log(line)
    {
      const [p50, p90] = [50, 90].map((p) => percentile(logins.daemon, p))
      const hash50 = percentile(logins.hash, 50)
      const ratio = p50! / hash50
      console.log(`${pad('login_with_password + logout', 40)}p50 ${p50!.toFixed(2)} ms   p90 ${p90!.toFixed(2)} ms   ratio ${ratio.toFixed(2)}×   aim ≤ ${AIM_LOGIN_RATIO}×   ${verdict(ratio <= AIM_LOGIN_RATIO)}`)
      console.log(`${pad('  (password hash alone, for the ratio)', 40)}p50 ${hash50.toFixed(2)} ms   p90 ${percentile(logins.hash, 90).toFixed(2)} ms`)
    }
    console.log(line)
    console.log(`aims: reads ≥ ${AIM_READ_RATIO * 100}% of the bare server's rate for the same bytes; writes ≥ ${AIM_WRITES}/s; event p50 ≤ ${AIM_EVENT_P50_MS} ms; login ≤ ${AIM_LOGIN_RATIO}× its password hash`)
    console.log(`(${VM_COUNT} VMs, ${CLIENTS} keep-alive clients, ${SECONDS} s per figure; load generator in this process, daemon and bare server in their own)`)
  } finally {
    await cleanup()
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
