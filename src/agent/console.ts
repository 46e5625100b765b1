// The agent's end of /console: opens a running VM's VNC (rfb) or serial (vt100) socket, named
// by VM uuid and protocol only (never a path from the caller), or the host's own console (the
// control domain's rfb console, started on demand: host-console.ts), and joins it to the API
// layer's CONNECT stream. Closing either end closes the other.
import { createConnection } from 'node:net'
import type { Duplex } from 'node:stream'
import { splice } from '../lib/splice.js'
import type { HostConsole } from './host-console.js'
import type { VmRuntime } from './vms.js'

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

function answer(socket: Duplex, status: string): void {
  if (!socket.destroyed) socket.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
}

/** The host console's socket for `client` (which it counts while connected); undefined if it has none of this protocol or cannot start. */
async function hostConsoleSocket(host: HostConsole | undefined, protocol: 'rfb' | 'vt100', client: Duplex): Promise<string | undefined> {
  if (!host || protocol !== 'rfb') return undefined
  try {
    return await host.open(client)
  } catch (err) {
    console.error(`host console: ${(err as Error).message}`)
    return undefined
  }
}

/** The `console` connect handler: args `{ vm: <VM uuid>, protocol: 'rfb' | 'vt100', controlDomain?: true }`. */
export function consoleConnect(vms: VmRuntime, host?: HostConsole): (args: unknown, socket: Duplex) => Promise<void> {
  return async (args, socket) => {
    socket.on('error', () => socket.destroy())
    const { vm, protocol, controlDomain } = (args ?? {}) as { vm?: unknown; protocol?: unknown; controlDomain?: unknown }
    if (typeof vm !== 'string' || !UUID_RE.test(vm) || (protocol !== 'rfb' && protocol !== 'vt100')) return answer(socket, '400 Bad Request')
    const path = controlDomain === true ? await hostConsoleSocket(host, protocol, socket) : vms.consoleSocket(vm, protocol)
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
