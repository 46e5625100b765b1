// Linux bridges for networks and tap devices for VIFs, through iproute2. Names are derived
// per host so that several daemons on one machine never collide (at most 15 characters).
import { writeFile } from 'node:fs/promises'
import { runProgram } from '../lib/programs.js'

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/

/** The host's bridges and taps as the agent changes them: Linux's (needs root), or an in-memory stand-in under the simulator. */
export interface HostNetwork {
  ensureBridge(name: string): Promise<void>
  /** A tap in `bridge` (a leftover of the same name is replaced). */
  createTap(name: string, bridge: string): Promise<void>
  moveLink(name: string, bridge: string): Promise<void>
  /** Removes a bridge or tap; nothing if it is not there. */
  deleteLink(name: string): Promise<void>
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

export const linuxNetwork: HostNetwork = { ensureBridge, createTap, moveLink, deleteLink }
