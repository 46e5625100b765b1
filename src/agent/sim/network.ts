// The host's bridges and taps in memory, for an agent on the simulated hypervisor (tests only):
// no root, nothing changes on the machine.
import { vlanDeviceName, type HostNetwork } from '../../net/bridge.js'

export class SimNetwork implements HostNetwork {
  readonly bridges = new Set<string>()
  /** Tap or VLAN device -> the bridge it is in (undefined once that bridge is gone, as Linux leaves it). */
  readonly taps = new Map<string, string | undefined>()

  async ensureBridge(name: string): Promise<void> {
    this.bridges.add(name)
  }

  async createTap(name: string, bridge: string): Promise<void> {
    if (!this.bridges.has(bridge)) throw new Error(`no bridge ${bridge}`)
    this.taps.set(name, bridge)
  }

  async moveLink(name: string, bridge: string): Promise<void> {
    if (!this.taps.has(name) || !this.bridges.has(bridge)) throw new Error(`no link ${name} or bridge ${bridge}`)
    this.taps.set(name, bridge)
  }

  /** NIC -> the bridge it is in. */
  readonly nics = new Map<string, string>()

  async attachNic(device: string, bridge: string): Promise<boolean> {
    if (!this.bridges.has(bridge)) throw new Error(`no bridge ${bridge}`)
    this.nics.set(device, bridge)
    return true
  }

  async detachNic(device: string, bridge: string): Promise<void> {
    if (this.nics.get(device) === bridge) this.nics.delete(device)
  }

  async createVlan(device: string, tag: number, bridge: string): Promise<void> {
    if (!this.bridges.has(bridge)) throw new Error(`no bridge ${bridge}`)
    this.taps.set(vlanDeviceName(device, tag), bridge)
  }

  async deleteLink(name: string): Promise<void> {
    this.taps.delete(name)
    if (!this.bridges.delete(name)) return
    for (const [tap, bridge] of this.taps) if (bridge === name) this.taps.set(tap, undefined)
  }
}
