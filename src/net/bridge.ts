// Linux bridges for networks and tap devices for VIFs, through iproute2. Names are derived
// per host so that several daemons on one machine never collide (at most 15 characters).
import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { programPath, runProgram } from '../lib/programs.js'

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/

/** The host's bridges and taps as the agent changes them: Linux's (needs root), or an in-memory stand-in under the simulator. */
export interface HostNetwork {
  ensureBridge(name: string): Promise<void>
  /** A tap in `bridge` (a leftover of the same name is replaced). */
  createTap(name: string, bridge: string): Promise<void>
  moveLink(name: string, bridge: string): Promise<void>
  /** Removes a bridge or tap; nothing if it is not there. */
  deleteLink(name: string): Promise<void>
  /**
   * Puts NIC `device` (a PIF's) into `bridge`. A NIC carrying addresses only with
   * `moveAddresses`: its addresses and routes then move onto the bridge, which takes its MAC.
   * Answers whether the NIC is in the bridge.
   */
  attachNic(device: string, bridge: string, moveAddresses: boolean): Promise<boolean>
  /** Takes NIC `device` out of `bridge`, giving it back the addresses and routes the bridge carried for it. */
  detachNic(device: string, bridge: string): Promise<void>
  /** The 802.1Q device of `tag` on NIC `device`, made if missing, in `bridge`; VlanUnsupportedError if the kernel has no 802.1Q. */
  createVlan(device: string, tag: number, bridge: string): Promise<void>
}

/** The kernel cannot make VLAN devices (no CONFIG_VLAN_8021Q, as on the lab machines). */
export class VlanUnsupportedError extends Error {}

/** The VLAN device of `tag` on `device`: eth0.5, the NIC's name shortened to fit 15 characters. */
export function vlanDeviceName(device: string, tag: number): string {
  return `${device.slice(0, 15 - 1 - String(tag).length)}.${tag}`
}

/** A route to move with the addresses that carry it. */
export interface MovedRoute {
  /** "default", "10.0.0.0/8", "::/0"… */
  dst: string
  gateway?: string
  metric?: number
}

/** Where a NIC's addresses are now: on the NIC, or on the bridge standing for it (`holder`). */
export interface NicPlace {
  device: string
  mac: string
  mtu: number
  /** The bridge the NIC is in, if any. */
  master?: string
  /** The link that carries the NIC's addresses: the NIC or its master. */
  holder: string
  /** Global addresses as "address/prefix". */
  addresses: string[]
  routes: MovedRoute[]
  /** The master has no port but this NIC. */
  masterOtherwiseEmpty: boolean
}

const addrAdd = (cidr: string, dev: string) => (cidr.includes(':') ? `addr add ${cidr} dev ${dev}` : `addr add ${cidr} brd + dev ${dev}`)
const routeAdd = (r: MovedRoute, dev: string) => `route replace ${r.dst}${r.gateway ? ` via ${r.gateway}` : ''} dev ${dev}${r.metric !== undefined ? ` metric ${r.metric}` : ''}`

/**
 * The `ip -batch` lines that put the NIC into `bridge`, moving its addresses and routes from
 * where they are to the bridge; [] if it is there already. One batch, so the host is without its
 * address only between two lines of one process. A bridge left empty by the move (the NIC's
 * previous network's) goes.
 */
export function attachLines(nic: NicPlace, bridge: string): string[] {
  if (nic.master === bridge && (nic.holder === bridge || nic.addresses.length === 0)) return []
  const lines = [`link set dev ${bridge} address ${nic.mac} mtu ${nic.mtu} up`]
  for (const a of nic.addresses) lines.push(`addr del ${a} dev ${nic.holder}`)
  if (nic.master && nic.master !== bridge) lines.push(`link set dev ${nic.device} nomaster`)
  lines.push(`link set dev ${nic.device} master ${bridge} up`)
  for (const a of nic.addresses) lines.push(addrAdd(a, bridge))
  for (const r of nic.routes) lines.push(routeAdd(r, bridge))
  if (nic.master && nic.master !== bridge && nic.holder === nic.master && nic.masterOtherwiseEmpty) lines.push(`link del dev ${nic.master}`)
  return lines
}

/** The `ip -batch` lines that take the NIC out of `bridge`, its addresses and routes going back to it; [] if it is not in it. */
export function detachLines(nic: NicPlace, bridge: string): string[] {
  if (nic.master !== bridge) return []
  const lines: string[] = []
  const moving = nic.holder === bridge ? nic.addresses : []
  for (const a of moving) lines.push(`addr del ${a} dev ${bridge}`)
  lines.push(`link set dev ${nic.device} nomaster`)
  for (const a of moving) lines.push(addrAdd(a, nic.device))
  for (const r of nic.holder === bridge ? nic.routes : []) lines.push(routeAdd(r, nic.device))
  return lines
}

/** The bridge of network `networkUuid` on host `hostUuid`. */
export function bridgeName(hostUuid: string, networkUuid: string): string {
  return `f${hostUuid.replace(/-/g, '').slice(0, 6)}${networkUuid.replace(/-/g, '').slice(0, 6)}`
}

/** The tap of a VM's VIF `device` (unique per running VM, and a VM runs once). */
export function tapName(vmUuid: string, device: string): string {
  return `t${vmUuid.replace(/-/g, '').slice(0, 10)}${device}`.slice(0, 15)
}

async function ip(...args: string[]): Promise<string> {
  for (const a of args) if (a.length === 0) throw new Error('empty ip(8) argument')
  const { stdout } = await runProgram('ip', args)
  return stdout
}

async function exists(name: string): Promise<boolean> {
  return ip('link', 'show', 'dev', name).then(
    () => true,
    () => false,
  )
}

export async function ensureBridge(name: string, mtu = 1500): Promise<void> {
  if (!IFNAME.test(name)) throw new Error(`bad bridge name ${name}`)
  if (!(await exists(name))) await ip('link', 'add', 'name', name, 'type', 'bridge').catch(async (err) => {
    if (!(await exists(name))) throw err
  })
  await ip('link', 'set', 'dev', name, 'mtu', String(mtu), 'up')
  // VM-to-VM traffic must not traverse the host's FORWARD chain.
  await writeFile(`/sys/class/net/${name}/bridge/nf_call_iptables`, '0').catch(() => undefined)
}

export async function createTap(name: string, bridge: string, mtu = 1500): Promise<void> {
  if (!IFNAME.test(name)) throw new Error(`bad tap name ${name}`)
  if (await exists(name)) await ip('link', 'del', 'dev', name)
  await ip('tuntap', 'add', 'dev', name, 'mode', 'tap')
  await ip('link', 'set', 'dev', name, 'master', bridge, 'mtu', String(mtu), 'up')
}

/** Moves an existing link (a VM's tap) into another bridge, leaving it up: its user sees no change. */
export async function moveLink(name: string, bridge: string): Promise<void> {
  if (!IFNAME.test(name) || !IFNAME.test(bridge)) throw new Error(`bad link or bridge name ${name} ${bridge}`)
  await ip('link', 'set', 'dev', name, 'nomaster')
  await ip('link', 'set', 'dev', name, 'master', bridge, 'up')
}

export async function deleteLink(name: string): Promise<void> {
  if (await exists(name)) await ip('link', 'del', 'dev', name).catch(() => undefined)
}

interface JsonLink {
  ifname: string
  address?: string
  mtu: number
  master?: string
  addr_info?: { family: string; local: string; prefixlen: number; scope: string }[]
}
interface JsonRoute {
  dst: string
  gateway?: string
  metric?: number
  protocol?: string
  type?: string
}

const links = async (...args: string[]): Promise<JsonLink[]> => JSON.parse(await ip('-j', 'addr', 'show', ...args)) as JsonLink[]

/** Where NIC `device`'s addresses and routes are now (kernel routes come back by themselves, router advertisements' too). */
export async function nicPlace(device: string): Promise<NicPlace> {
  if (!IFNAME.test(device)) throw new Error(`bad NIC name ${device}`)
  const [nic] = await links('dev', device)
  if (!nic) throw new Error(`no NIC ${device}`)
  const mac = (nic.address ?? '').toLowerCase()
  const master = nic.master ? (await links('dev', nic.master))[0] : undefined
  const holderLink = master && (master.address ?? '').toLowerCase() === mac ? master : nic
  const addresses = (holderLink.addr_info ?? []).filter((a) => a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`)
  const routes: MovedRoute[] = []
  for (const family of ['-4', '-6']) {
    const found = JSON.parse(await ip('-j', family, 'route', 'show', 'dev', holderLink.ifname)) as JsonRoute[]
    for (const r of found) {
      if (r.protocol === 'kernel' || r.protocol === 'ra' || (r.type && r.type !== 'unicast')) continue
      routes.push({ dst: r.dst === 'default' && family === '-6' ? '::/0' : r.dst, ...(r.gateway ? { gateway: r.gateway } : {}), ...(r.metric !== undefined ? { metric: r.metric } : {}) })
    }
  }
  const masterPorts = nic.master ? (JSON.parse(await ip('-j', 'link', 'show', 'master', nic.master)) as JsonLink[]).length : 0
  return { device, mac, mtu: nic.mtu, ...(nic.master ? { master: nic.master } : {}), holder: holderLink.ifname, addresses, routes, masterOtherwiseEmpty: masterPorts <= 1 }
}

/** Runs `ip -force -batch -`: every line, also after one fails (stopping half-way could leave the host without its address). */
function ipBatch(lines: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(programPath('ip'), ['-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.once('error', reject)
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`ip -batch: ${stderr.trim() || `exit ${code}`}`))))
    child.stdin.end(`${lines.join('\n')}\n`)
  })
}

export async function attachNic(device: string, bridge: string, moveAddresses: boolean): Promise<boolean> {
  if (!IFNAME.test(bridge)) throw new Error(`bad bridge name ${bridge}`)
  const place = await nicPlace(device)
  if (place.addresses.length > 0 && place.master !== bridge && !moveAddresses) return false
  const lines = attachLines(place, bridge)
  if (lines.length > 0) await ipBatch(lines)
  return true
}

export async function detachNic(device: string, bridge: string): Promise<void> {
  if (!(await exists(device))) return
  const lines = detachLines(await nicPlace(device), bridge)
  if (lines.length > 0) await ipBatch(lines)
}

export async function createVlan(device: string, tag: number, bridge: string): Promise<void> {
  const name = vlanDeviceName(device, tag)
  if (!IFNAME.test(device) || !IFNAME.test(bridge) || !Number.isInteger(tag)) throw new Error(`bad VLAN ${device} ${tag} ${bridge}`)
  if (!(await exists(name))) {
    await ip('link', 'add', 'link', device, 'name', name, 'type', 'vlan', 'id', String(tag)).catch((err: { stderr?: string }) => {
      // iproute2's answer when the kernel has no such link type.
      if (/unknown device type|not supported/i.test(err.stderr ?? '')) throw new VlanUnsupportedError(`this host's kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q)`)
      throw err
    })
  }
  await ip('link', 'set', 'dev', name, 'master', bridge, 'up')
}

export const linuxNetwork: HostNetwork = { ensureBridge, createTap, moveLink, deleteLink, attachNic, detachNic, createVlan }
