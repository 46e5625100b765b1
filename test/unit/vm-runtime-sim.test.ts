// The host agent's VmRuntime on the simulated hypervisor: what it reports of VMs that stop on
// their own, and finding VMs again after a daemon restart.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { after, before, describe, it } from 'node:test'
import { SimBackend } from '../../src/agent/sim/backend.js'
import { SimNetwork } from '../../src/agent/sim/network.js'
import { tapName } from '../../src/net/bridge.js'
import type { StartRequest } from '../../src/agent/contract.js'
import { VmRuntime, type StopReason } from '../../src/agent/vms.js'

let dir: string
before(async () => (dir = await mkdtemp(join(tmpdir(), 'flotilla-runtime-'))))
after(() => rm(dir, { recursive: true, force: true }))

function runtime(backend: SimBackend, network = new SimNetwork()) {
  const stops: [string, StopReason][] = []
  const vms = new VmRuntime({ accel: 'tcg', runDir: join(dir, 'vm'), ovmfDir: '/usr/share/OVMF' }, randomUUID(), { stopped: (uuid, reason) => stops.push([uuid, reason]), pausedOnIoError: () => undefined }, backend, network)
  return { vms, stops, network }
}

const request = (haltOnReboot = false): StartRequest => ({
  uuid: randomUUID(),
  name: 'sim',
  memoryBytes: 256 * 2 ** 20,
  vcpus: 1,
  maxVcpus: 1,
  firmware: 'bios',
  secureBoot: false,
  platform: {},
  bootOrder: 'c',
  oemStrings: [],
  haltOnReboot,
  disks: [],
  nics: [{ device: '0', mac: '52:54:00:12:34:56', network: randomUUID() }],
})

/** Lets the runtime hear of a stop (it reports after removing the VM's taps). */
const heard = async () => {
  for (let i = 0; i < 5; i++) await nextTurn()
}

describe('VmRuntime on the simulator', () => {
  it('reports each stop the guest decides with its reason, and none it made itself', async () => {
    const backend = new SimBackend()
    const { vms, stops, network } = runtime(backend)
    const act: [StopReason, (uuid: string) => void, boolean][] = [
      ['shutdown', (uuid) => backend.guest(uuid).powerOff(), false],
      ['reboot', (uuid) => backend.guest(uuid).reboot(), true],
      ['crash', (uuid) => backend.guest(uuid).crash(), false],
      ['killed', (uuid) => backend.guest(uuid).die(), false],
    ]
    for (const [reason, make, haltOnReboot] of act) {
      const vm = request(haltOnReboot)
      await vms.start(vm)
      assert.equal(network.taps.size, 1)
      make(vm.uuid)
      await heard()
      assert.deepEqual(stops.at(-1), [vm.uuid, reason])
      assert.equal(vms.isRunning(vm.uuid), false)
      assert.equal(network.taps.size, 0, 'its tap went with it')
    }
    const own = request()
    await vms.start(own)
    await vms.stop(own.uuid, true)
    await vms.start(own)
    await vms.stop(own.uuid, false)
    await heard()
    assert.equal(stops.length, act.length, 'the stops it asked for are not news')
  })

  it('resets a VM in place on a guest reboot unless reboot halts it', async () => {
    const backend = new SimBackend()
    const { vms, stops } = runtime(backend)
    const vm = request(false)
    await vms.start(vm)
    backend.guest(vm.uuid).reboot()
    await heard()
    assert.deepEqual(stops, [])
    assert.equal(backend.guest(vm.uuid).boots, 2)
    await vms.stop(vm.uuid, false)
  })

  it('finds its VMs again after a restart: the new runtime hears of them, the old one no longer', async () => {
    const backend = new SimBackend()
    const first = runtime(backend)
    const vm = request()
    const gone = request()
    await first.vms.start(vm)
    await first.vms.start(gone)
    await first.vms.detachAll()
    await heard()
    // VMs go on running when the daemon stops: their network with them.
    assert.equal(first.network.taps.get(tapName(vm.uuid, '0')) !== undefined, true, 'the tap of a VM left running stays in its bridge')
    backend.guest(gone.uuid).die()
    const second = runtime(backend, first.network)
    assert.deepEqual(await second.vms.reattach([vm, gone].map((v) => ({ uuid: v.uuid, devices: ['0'] }))), [vm.uuid])
    await second.vms.pause(vm.uuid)
    assert.equal(backend.guest(vm.uuid).status, 'paused')
    backend.guest(vm.uuid).powerOff()
    await heard()
    assert.deepEqual(first.stops, [])
    assert.deepEqual(second.stops, [[vm.uuid, 'shutdown']])
    assert.equal(second.network.taps.has(tapName(vm.uuid, '0')), false, 'the tap goes with the VM')
  })
})
