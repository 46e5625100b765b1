// Golden QEMU command lines that start from VM records, as a user makes them through the XenAPI
// (a template cloned and provisioned, disks, CDs, NICs, platform keys set), through the real
// path: xapi's start request, the agent's hardware decisions, the config QEMU would get, argv.
// Run on the simulated hypervisor, so no QEMU runs. UPDATE_GOLDEN=1 rewrites the files.
import assert from 'node:assert/strict'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { qemuArgv } from '../../src/qemu/argv.js'
import { startSimHost, type SimHost } from '../helpers/sim-host.js'

const GOLDEN_DIR = fileURLToPath(new URL('../../../test/golden/qemu-from-records/', import.meta.url))
const NULL = 'OpaqueRef:NULL'
const GiB = 2 ** 30

let host: SimHost
const c = <T = any>(method: string, ...params: unknown[]) => host.c<T>(method, ...params)

/** A VM from a template, as XO makes one: clone, provision, no longer a template. */
async function fromTemplate(template: string, name: string): Promise<string> {
  const [ref] = await c<string[]>('VM.get_by_name_label', template)
  const vm = await c<string>('VM.clone', ref, name)
  await c('VM.provision', vm)
  await c('VM.set_is_a_template', vm, false)
  return vm
}

const emptyCd = (vm: string, userdevice: string) =>
  c('VBD.create', { VM: vm, VDI: NULL, userdevice, bootable: false, mode: 'RO', type: 'CD', empty: true, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })

async function nic(vm: string, device: string, mac: string): Promise<void> {
  const [network] = await c<string[]>('network.get_by_name_label', 'Host internal management network')
  await c('VIF.create', { VM: vm, network, device, MAC: mac, MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
}

/** Test VMs fit the simulated host: memory set the way XO's settings page does. */
const memory = (vm: string, bytes: number) => c('VM.set_memory_limits', vm, bytes, bytes, bytes, bytes)

/** The argv of the VM once started, with what differs from run to run (temp dirs, uuids) named by role. */
async function startedArgv(vm: string): Promise<string> {
  await c('VM.start', vm, false, false)
  const uuid = await c<string>('VM.get_uuid', vm)
  const config = host.backend.guest(uuid).config
  const ids = new Map<string, string>()
  return (
    qemuArgv(config)
      .join('\n')
      .replaceAll(host.dataDir, '<data>')
      .replaceAll(uuid, '<vm>')
      .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, (id) => ids.get(id) ?? (ids.set(id, `<uuid${ids.size + 1}>`), ids.get(id)!))
      .replaceAll(uuid.replace(/-/g, '').slice(0, 12), '<vm12>')
      .replaceAll(uuid.replace(/-/g, '').slice(0, 10), '<vm10>') + '\n'
  )
}

const SHAPES: Record<string, () => Promise<string>> = {
  // The test guest as the integration tests start it: BIOS, virtio, one disk.
  'test-guest': () => fromTemplate('Flotilla test guest', 'golden test guest'),
  // A Linux server: virtio disk and NICs, an empty CD drive, SMBIOS OEM strings, more vCPUs at start than 1.
  'debian-server': async () => {
    const vm = await fromTemplate('Debian Bookworm 12', 'golden debian')
    await memory(vm, GiB)
    await emptyCd(vm, '3')
    await nic(vm, '0', '0e:11:22:33:44:01')
    await nic(vm, '1', '0e:11:22:33:44:02')
    await c('VM.set_bios_strings', vm, { 'oem-1': 'flotilla:role=db', 'oem-2': 'a,b' })
    return vm
  },
  // A Windows desktop: UEFI with Secure Boot, emulated AHCI disk and e1000 NIC.
  'windows-secureboot': async () => {
    const vm = await fromTemplate('Windows 10 (64-bit)', 'golden windows')
    await memory(vm, GiB)
    await c('VM.add_to_platform', vm, 'secureboot', 'true')
    await nic(vm, '0', '0e:11:22:33:44:03')
    return vm
  },
  // An install from media: emulated devices, boot from CD first, a CD drive added by the user.
  'other-install-media': async () => {
    const vm = await fromTemplate('Other install media', 'golden other')
    await emptyCd(vm, '3')
    return vm
  },
}

describe('QEMU command lines from VM records (golden)', () => {
  before(async () => {
    host = await startSimHost()
  })
  after(() => host?.dispose())

  for (const [name, make] of Object.entries(SHAPES)) {
    it(name, async () => {
      const actual = await startedArgv(await make())
      const file = `${GOLDEN_DIR}${name}.argv`
      if (process.env.UPDATE_GOLDEN === '1') {
        await mkdir(GOLDEN_DIR, { recursive: true })
        await writeFile(file, actual)
      }
      assert.equal(actual, await readFile(file, 'utf8'), `argv of ${name} differs from ${file} (UPDATE_GOLDEN=1 rewrites it)`)
    })
  }
})
