// The QMP client against a scripted fake server on a temporary unix socket.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { QmpClient, QmpError } from '../../src/qemu/qmp.js'

const GREETING = { QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: '' }, capabilities: ['oob'] } }

/** A fake QEMU: greets, accepts qmp_capabilities, then hands each further command to `handle`. */
class FakeQemu {
  readonly server: Server
  readonly commands: any[] = []
  socket?: Socket
  handle: (command: any, socket: Socket) => void = (cmd, s) => send(s, { return: {}, id: cmd.id })

  constructor(readonly path: string) {
    this.server = createServer((socket) => {
      this.socket = socket
      socket.write(JSON.stringify(GREETING) + '\r\n')
      let buffer = ''
      socket.on('data', (chunk) => {
        buffer += chunk
        for (let i; (i = buffer.indexOf('\n')) >= 0; buffer = buffer.slice(i + 1)) {
          const command = JSON.parse(buffer.slice(0, i))
          this.commands.push(command)
          if (command.execute === 'qmp_capabilities') send(socket, { return: {}, id: command.id })
          else this.handle(command, socket)
        }
      })
      socket.on('error', () => {})
    })
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.path, resolve))
  }

  close(): Promise<void> {
    this.socket?.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

const send = (socket: Socket, message: object): boolean => socket.write(JSON.stringify(message) + '\n')
const event = (name: string, data: object = {}) => ({ event: name, data, timestamp: { seconds: 1, microseconds: 2 } })

describe('QMP client', () => {
  let dir: string
  let n = 0
  const fakes: FakeQemu[] = []
  const clients: QmpClient[] = []
  const fake = async (): Promise<FakeQemu> => {
    const f = new FakeQemu(join(dir, `q${n++}.sock`))
    fakes.push(f)
    await f.listen()
    return f
  }
  const client = async (f: FakeQemu, opts = {}): Promise<QmpClient> => {
    const c = await QmpClient.connect(f.path, opts)
    clients.push(c)
    return c
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'flt-qmp-'))
  })
  after(async () => {
    await Promise.all(clients.map((c) => c.close()))
    await Promise.all(fakes.map((f) => f.close()))
    await rm(dir, { recursive: true, force: true })
  })

  it('negotiates capabilities and reads the version', async () => {
    const f = await fake()
    const c = await client(f)
    assert.deepEqual(c.version, { major: 7, minor: 2, micro: 22 })
    assert.equal(f.commands[0].execute, 'qmp_capabilities')
  })

  it('retries until the socket appears', async () => {
    const path = join(dir, 'late.sock')
    const f = new FakeQemu(path)
    fakes.push(f)
    setTimeout(() => void f.listen(), 100)
    const c = await QmpClient.connect(path, { timeoutMs: 5000 })
    clients.push(c)
    assert.equal(c.closed, false)
  })

  it('gives up at the deadline when nobody listens', async () => {
    await assert.rejects(QmpClient.connect(join(dir, 'never.sock'), { timeoutMs: 100 }), /not accepting connections/)
  })

  it('matches concurrent answers by id, whatever their order, and splits frames anywhere', async () => {
    const f = await fake()
    const held: any[] = []
    f.handle = (cmd, s) => {
      held.push(cmd)
      if (held.length < 3) return
      // Answer in reverse order, byte by byte, with an event in the middle.
      const wire = [...held].reverse().map((h) => JSON.stringify({ return: { echo: h.arguments.n }, id: h.id }) + '\n').join('')
      const framed = JSON.stringify(event('RESUME')) + '\n' + wire
      for (const ch of Buffer.from(framed)) s.write(Buffer.from([ch]))
    }
    const c = await client(f)
    const events: string[] = []
    c.on('event', (e) => events.push(e.event))
    const answers = await Promise.all([1, 2, 3].map((n) => c.execute('echo', { n })))
    assert.deepEqual(answers, [{ echo: 1 }, { echo: 2 }, { echo: 3 }])
    assert.deepEqual(events, ['RESUME'])
  })

  it('rejects with QMP error class and description', async () => {
    const f = await fake()
    f.handle = (cmd, s) => send(s, { error: { class: 'DeviceNotFound', desc: "Device 'x' not found" }, id: cmd.id })
    const c = await client(f)
    const err = await c.execute('device_del', { id: 'x' }).catch((e) => e)
    assert.ok(err instanceof QmpError)
    assert.equal(err.qmpClass, 'DeviceNotFound')
    assert.equal(err.desc, "Device 'x' not found")
    assert.equal(err.command, 'device_del')
  })

  it('times out a command and ignores its late answer', async () => {
    const f = await fake()
    f.handle = (cmd, s) => {
      if (cmd.execute === 'slow') setTimeout(() => send(s, { return: 'late', id: cmd.id }), 150)
      else setTimeout(() => send(s, { return: 'fast', id: cmd.id }), 200)
    }
    const c = await client(f)
    await assert.rejects(c.execute('slow', undefined, { timeoutMs: 50 }), /no answer within 50 ms/)
    assert.equal(await c.execute('next'), 'fast')
  })

  it('waits for an event matching a predicate, and times out otherwise', async () => {
    const f = await fake()
    f.handle = (cmd, s) => {
      send(s, { return: {}, id: cmd.id })
      send(s, event('BLOCK_JOB_READY', { device: 'other' }))
      send(s, event('BLOCK_JOB_READY', { device: 'mirror0' }))
    }
    const c = await client(f)
    const ready = c.waitForEvent('BLOCK_JOB_READY', (e) => e.data.device === 'mirror0', 2000)
    await c.execute('blockdev-mirror')
    assert.equal((await ready).data.device, 'mirror0')
    await assert.rejects(c.waitForEvent('NEVER', undefined, 30), /did not arrive within 30 ms/)
  })

  it('fails pending commands and event waits cleanly when QEMU goes away mid-call', async () => {
    const f = await fake()
    f.handle = (_cmd, s) => s.destroy()
    const c = await client(f)
    const waiting = c.waitForEvent('SHUTDOWN', undefined, 5000)
    const closed = new Promise((resolve) => c.once('close', resolve))
    await assert.rejects(c.execute('query-status'), /QMP query-status: QEMU closed the QMP connection before answering/)
    await assert.rejects(waiting, /closed while waiting for event SHUTDOWN/)
    await closed
    assert.equal(c.closed, true)
    await assert.rejects(c.execute('cont'), /connection is closed/)
  })

  it('reports a server that never greets (another client holds the monitor)', async () => {
    const path = join(dir, 'mute.sock')
    const mute = createServer(() => {})
    await new Promise<void>((resolve) => mute.listen(path, resolve))
    try {
      await assert.rejects(QmpClient.connect(path, { timeoutMs: 100 }), /no QMP greeting within/)
    } finally {
      mute.close()
      await sleep(0)
    }
  })

  it('treats a non-JSON line as a broken connection', async () => {
    const f = await fake()
    f.handle = (_cmd, s) => s.write('garbage\n')
    const c = await client(f)
    await assert.rejects(c.execute('query-status'), /not JSON: garbage/)
  })
})
