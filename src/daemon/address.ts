// The host's management address when none is given: the IPv4 address of the default route's interface.
import { readFileSync } from 'node:fs'
import os from 'node:os'

/** The interface of the default route in /proc/net/route's text, if any. */
export function defaultRouteInterface(routeTable: string): string | undefined {
  for (const line of routeTable.split('\n').slice(1)) {
    const [iface, destination] = line.trim().split(/\s+/)
    if (iface && destination === '00000000') return iface
  }
  return undefined
}

export function defaultAddress(): string {
  let iface: string | undefined
  try {
    iface = defaultRouteInterface(readFileSync('/proc/net/route', 'utf8'))
  } catch {
    iface = undefined
  }
  const candidates = iface ? (os.networkInterfaces()[iface] ?? []) : Object.values(os.networkInterfaces()).flat()
  return candidates.find((a) => a?.family === 'IPv4' && !a.internal)?.address ?? '127.0.0.1'
}
