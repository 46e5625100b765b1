// The host's network interfaces as its PIF records describe them: links and addresses from
// iproute2, hardware facts from sysfs, resolvers from resolv.conf. Read only: nothing here
// changes the host's networking. A NIC bridged for a network (its PIF plugged, net/bridge.ts)
// hands its addresses to the bridge, which takes the NIC's MAC: the facts still give them to the
// NIC, as xapi's PIF for eth0 keeps its IP while xenbr0 carries it.
import { readFile, readdir, realpath } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { runProgram } from '../lib/programs.js'
import type { NetworkFacts, NicFacts } from './contract.js'

interface IpLink {
  ifname: string
  address?: string
  mtu: number
  link_type: string
  /** The bridge the link is a port of. */
  master?: string
  addr_info?: { family: string; local: string; prefixlen: number; scope: string; dynamic?: boolean }[]
}

/** `ip -j addr show` as NICs without their sysfs facts; loopback is no NIC. */
export function parseIpAddr(json: string): Omit<NicFacts, 'physical' | 'carrier' | 'speed' | 'fullDuplex' | 'vendorId' | 'deviceId' | 'pciBusPath'>[] {
  const links = JSON.parse(json) as IpLink[]
  return links
    .filter((l) => l.link_type === 'ether')
    .map((l) => {
      const addrs = (family: string) =>
        (l.addr_info ?? []).filter((a) => a.family === family && a.scope === 'global').map((a) => ({ address: a.local, prefix: a.prefixlen, dynamic: Boolean(a.dynamic) }))
      return { device: l.ifname, mac: (l.address ?? '').toLowerCase(), mtu: l.mtu, ipv4: addrs('inet'), ipv6: addrs('inet6') }
    })
}

/**
 * The bridges that stand for one of their ports: a bridge with the MAC of a port it holds carries
 * that NIC's addresses (bridge -> port). Taps and other ports have MACs of their own.
 */
export function bridgeStandIns(json: string): Map<string, string> {
  const links = JSON.parse(json) as IpLink[]
  const mac = new Map(links.map((l) => [l.ifname, (l.address ?? '').toLowerCase()]))
  const out = new Map<string, string>()
  for (const l of links) if (l.master && l.address && mac.get(l.master) === l.address.toLowerCase()) out.set(l.master, l.ifname)
  return out
}

type Nic = ReturnType<typeof parseIpAddr>[number]

/** The NICs with the addresses of the bridges standing for them, the bridges without; routes through such a bridge go through its NIC. */
export function throughBridges<N extends Nic>(nics: N[], standIns: Map<string, string>, routes: ({ device: string; address: string } | undefined)[]): N[] {
  const byName = new Map(nics.map((n) => [n.device, n]))
  const out = nics.map((n) => ({ ...n }))
  const outByName = new Map(out.map((n) => [n.device, n]))
  for (const [bridge, port] of standIns) {
    const b = byName.get(bridge)
    const target = outByName.get(port)
    if (!b || !target) continue
    target.ipv4 = [...target.ipv4, ...b.ipv4]
    target.ipv6 = [...target.ipv6, ...b.ipv6]
    outByName.get(bridge)!.ipv4 = []
    outByName.get(bridge)!.ipv6 = []
  }
  for (const r of routes) if (r && standIns.has(r.device)) r.device = standIns.get(r.device)!
  return out
}

/** The default route in `ip -j route show default`'s answer, if there is one. */
export function parseDefaultRoute(json: string): { device: string; address: string } | undefined {
  const route = (JSON.parse(json) as { gateway?: string; dev?: string }[]).find((r) => r.gateway && r.dev)
  return route ? { device: route.dev!, address: route.gateway! } : undefined
}

export function parseResolvConf(text: string): string[] {
  return [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1]!)
}

const PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/

const readText = (path: string) => readFile(path, 'utf8').then((t) => t.trim(), () => '')

/** The sysfs facts of one interface: its device link, carrier, speed, duplex and PCI identity. */
async function sysfsFacts(device: string): Promise<Pick<NicFacts, 'physical' | 'carrier' | 'speed' | 'fullDuplex' | 'vendorId' | 'deviceId' | 'pciBusPath'>> {
  const dir = join('/sys/class/net', device)
  const deviceDir = await realpath(join(dir, 'device')).catch(() => undefined)
  // A virtio NIC's device is the virtio bus device; its PCI function is the parent.
  let pci = deviceDir
  while (pci && pci !== '/' && !PCI_ADDRESS.test(basename(pci))) pci = dirname(pci)
  const pciDir = pci && pci !== '/' ? pci : undefined
  const hex = async (file: string) => (pciDir ? (await readText(join(pciDir, file))).replace(/^0x/, '') : '')
  const speed = Number(await readText(join(dir, 'speed')))
  return {
    physical: deviceDir !== undefined,
    carrier: (await readText(join(dir, 'carrier'))) === '1',
    speed: speed > 0 ? speed : 0,
    fullDuplex: (await readText(join(dir, 'duplex'))) === 'full',
    vendorId: await hex('vendor'),
    deviceId: await hex('device'),
    pciBusPath: pciDir ? basename(pciDir) : '',
  }
}

async function ip(...args: string[]): Promise<string> {
  return (await runProgram('ip', args, { timeout: 5000 })).stdout
}

export async function readNetworkFacts(): Promise<NetworkFacts> {
  const [addr, route4, route6, resolv] = await Promise.all([
    ip('-j', 'addr', 'show'),
    ip('-j', 'route', 'show', 'default').catch(() => '[]'),
    ip('-j', '-6', 'route', 'show', 'default').catch(() => '[]'),
    readFile('/etc/resolv.conf', 'utf8').catch(() => ''),
  ])
  const present = new Set(await readdir('/sys/class/net').catch(() => [] as string[]))
  const gateway4 = parseDefaultRoute(route4)
  const gateway6 = parseDefaultRoute(route6)
  const nics: NicFacts[] = []
  for (const link of throughBridges(parseIpAddr(addr), bridgeStandIns(addr), [gateway4, gateway6])) if (present.has(link.device)) nics.push({ ...link, ...(await sysfsFacts(link.device)) })
  return { nics, ...(gateway4 ? { gateway4 } : {}), ...(gateway6 ? { gateway6 } : {}), dns: parseResolvConf(resolv) }
}
