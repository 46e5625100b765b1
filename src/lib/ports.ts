// A free TCP port for a listener that starts later. Not one from listen(0): the kernel hands those
// out of its ephemeral range, from which outgoing connections also take their local ports, so
// one can be taken between the choice and the listen (a test daemon failed with EADDRINUSE so).
// Ports below that range are only ever taken by listeners.
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'

const LOWEST = 10_000

/** The first port of the kernel's ephemeral range (Linux's default when it cannot be read). */
function ephemeralStart(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768
  } catch {
    return 32768
  }
}

const canListen = (port: number, host: string) =>
  new Promise<boolean>((resolve) => {
    const s = createServer()
    s.once('error', () => resolve(false))
    s.listen(port, host, () => s.close(() => resolve(true)))
  })

/** A port below the ephemeral range that nothing listens on now (on `host`, loopback by default). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const top = Math.max(ephemeralStart(), LOWEST + 1000)
  for (let tries = 0; tries < 100; tries++) {
    const port = LOWEST + Math.floor(Math.random() * (top - LOWEST))
    if (await canListen(port, host)) return port
  }
  throw new Error(`no free port found between ${LOWEST} and ${top}`)
}
