// The agent's end of /console: opens a running VM's VNC (rfb) or serial (vt100) socket, named
// by VM uuid and protocol only (never a path from the caller), and joins it to the API
// layer's CONNECT stream. Closing either end closes the other.
import { createConnection } from 'node:net'
import type { Duplex } from 'node:stream'
import type { VmRuntime } from './vms.js'

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

function answer(socket: Duplex, status: string): void {
  if (!socket.destroyed) socket.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
}

/** Bytes both ways; when either side ends, closes or fails, the other is closed too. */
export function splice(a: Duplex, b: Duplex): void {
  let done = false
  const close = () => {
    if (done) return
    done = true
    a.destroy()
    b.destroy()
  }
  for (const s of [a, b]) {
    s.on('error', close)
    s.once('close', close)
    s.once('finish', close)
  }
  a.pipe(b)
  b.pipe(a)
}

/** The `console` connect handler: args `{ vm: <VM uuid>, protocol: 'rfb' | 'vt100' }`. */
export function consoleConnect(vms: VmRuntime): (args: unknown, socket: Duplex) => Promise<void> {
  return async (args, socket) => {
    socket.on('error', () => socket.destroy())
    const { vm, protocol } = (args ?? {}) as { vm?: unknown; protocol?: unknown }
    if (typeof vm !== 'string' || !UUID_RE.test(vm) || (protocol !== 'rfb' && protocol !== 'vt100')) return answer(socket, '400 Bad Request')
    const path = vms.consoleSocket(vm, protocol)
    if (!path) return answer(socket, '404 Not Found')
    const target = createConnection(path)
    const opened = await new Promise<boolean>((resolve) => {
      target.once('connect', () => resolve(true))
      target.once('error', () => resolve(false))
    })
    if (!opened) {
      target.destroy()
      return answer(socket, '404 Not Found')
    }
    if (socket.destroyed) return void target.destroy()
    target.on('error', () => target.destroy())
    socket.write('HTTP/1.1 200 OK\r\n\r\n')
    splice(socket, target)
  }
}
