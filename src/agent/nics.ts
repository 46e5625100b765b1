// The host's network interfaces as its PIF records describe them: links and addresses from
// iproute2, hardware facts from sysfs, resolvers from resolv.conf. Read only: nothing here
// changes the host's networking.
import { readFile, readdir, realpath } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { runProgram } from '../lib/programs.js'
import type { NetworkFacts, NicFacts } from './contract.js'

interface IpLink {
  ifname: string
  address?: string
  mtu: number
  link_type: string
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
  const nics: NicFacts[] = []
  for (const link of parseIpAddr(addr)) if (present.has(link.device)) nics.push({ ...link, ...(await sysfsFacts(link.device)) })
  const gateway4 = parseDefaultRoute(route4)
  const gateway6 = parseDefaultRoute(route6)
  return { nics, ...(gateway4 ? { gateway4 } : {}), ...(gateway6 ? { gateway6 } : {}), dns: parseResolvConf(resolv) }
}
