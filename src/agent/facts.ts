// Facts about this machine that the host record carries: CPUs, memory, versions, hostname,
// SMBIOS strings, network interfaces.
import { readFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { runProgram } from '../lib/programs.js'
import { readNetworkFacts } from './nics.js'
import type { CpuFacts, HostFacts } from './contract.js'

/** Parses /proc/cpuinfo into one entry per logical CPU. */
export function parseCpuinfo(text: string): CpuFacts[] {
  return text
    .split(/\n\s*\n/)
    .filter((block) => /^processor\s*:/m.test(block))
    .map((block) => {
      const get = (key: string) => new RegExp(`^${key}\\s*:\\s*(.*)$`, 'm').exec(block)?.[1]?.trim() ?? ''
      const flags = get('flags')
      return {
        vendor: get('vendor_id'),
        modelname: get('model name'),
        model: get('model'),
        family: get('cpu family'),
        stepping: get('stepping'),
        speed: get('cpu MHz'),
        flags,
        features: '',
      }
    })
}

export function parseMeminfo(text: string): { total: number; free: number } {
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s*(\\d+)`, 'm').exec(text)?.[1] ?? 0) * 1024
  return { total: kib('MemTotal'), free: kib('MemAvailable') }
}

/** Whether KVM can really run guests here: /dev/kvm plus hardware virtualisation in the CPU flags. */
export function kvmUsable(flags: string, devKvmExists: boolean): boolean {
  return devKvmExists && /\b(vmx|svm)\b/.test(flags)
}

/** The keys of host.bios_strings xapi fills (bios_strings.ml) and the files of /sys/class/dmi/id that hold them. */
const SMBIOS_KEYS: [key: string, file: string][] = [
  ['bios-vendor', 'bios_vendor'],
  ['bios-version', 'bios_version'],
  ['system-manufacturer', 'sys_vendor'],
  ['system-product-name', 'product_name'],
  ['system-version', 'product_version'],
  ['system-serial-number', 'product_serial'],
  ['baseboard-manufacturer', 'board_vendor'],
  ['baseboard-product-name', 'board_name'],
  ['baseboard-version', 'board_version'],
  ['baseboard-serial-number', 'board_serial'],
]

/** As xapi cleans dmidecode's values: printable ASCII, trimmed, "Not Specified" as nothing. */
const smbiosValue = (raw: string | undefined) => {
  const text = (raw ?? '').replace(/[^\x20-\x7e]/g, '').trim()
  return text === 'Not Specified' ? '' : text
}

/**
 * host.bios_strings from the DMI files (a key whose file is missing or unreadable is empty, as
 * xapi leaves a string dmidecode does not report) and the SMBIOS type 11 OEM strings as oem-N.
 * xapi puts its own Xen markers first as oem-1 and oem-2: they describe Xen to guests, so the
 * host's strings start at oem-1 here.
 */
export function biosStrings(dmi: Record<string, string | undefined>, oem: string[]): Record<string, string> {
  const strings = Object.fromEntries(SMBIOS_KEYS.map(([key, file]) => [key, smbiosValue(dmi[file])]))
  oem.forEach((text, i) => (strings[`oem-${i + 1}`] = smbiosValue(text)))
  return strings
}

/** The strings of every SMBIOS type 11 (OEM strings) structure in a raw SMBIOS table. */
export function smbiosOemStrings(table: Buffer): string[] {
  const out: string[] = []
  for (let at = 0; at + 4 <= table.length; ) {
    const type = table[at]!
    const length = table[at + 1]!
    if (length < 4) break
    // The formatted area is followed by NUL-terminated strings and one more NUL (two if none).
    const strings: string[] = []
    let next = at + length
    if (table[next] === 0) next += 2
    else
      for (;;) {
        const nul = table.indexOf(0, next)
        if (nul < 0) return out
        strings.push(table.toString('latin1', next, nul))
        next = nul + 1
        if (table[next] === 0) {
          next++
          break
        }
      }
    if (type === 11) out.push(...strings.slice(0, table[at + 4]))
    if (type === 127) break
    at = next
  }
  return out
}

const DMI_DIR = '/sys/class/dmi/id'
const SMBIOS_TABLE = '/sys/firmware/dmi/tables/DMI'

async function readBiosStrings(): Promise<Record<string, string>> {
  const files = await Promise.all(SMBIOS_KEYS.map(async ([, file]) => [file, await readFile(join(DMI_DIR, file), 'utf8').catch(() => undefined)] as const))
  const table = await readFile(SMBIOS_TABLE).catch(() => Buffer.alloc(0))
  return biosStrings(Object.fromEntries(files), smbiosOemStrings(table))
}

async function qemuVersion(): Promise<string> {
  try {
    const { stdout } = await runProgram('qemu-system-x86_64', ['--version'], { timeout: 5000 })
    return /version (\S+)/.exec(stdout)?.[1] ?? ''
  } catch {
    return ''
  }
}

export async function readHostFacts(): Promise<HostFacts> {
  const [cpuinfo, meminfo, devKvm, qemu, bios, network] = await Promise.all([
    readFile('/proc/cpuinfo', 'utf8'),
    readFile('/proc/meminfo', 'utf8'),
    readFile('/dev/kvm').then(() => true, (e: NodeJS.ErrnoException) => e.code !== 'ENOENT'),
    qemuVersion(),
    readBiosStrings(),
    readNetworkFacts(),
  ])
  const cpus = parseCpuinfo(cpuinfo)
  const sockets = new Set(cpuinfo.split('\n').filter((l) => l.startsWith('physical id')).map((l) => l.split(':')[1]?.trim()))
  const mem = parseMeminfo(meminfo)
  return {
    hostname: os.hostname(),
    cpuCount: cpus.length,
    cpus,
    socketCount: Math.max(1, sockets.size),
    memoryTotal: mem.total,
    memoryFree: mem.free,
    kernel: os.release(),
    qemuVersion: qemu,
    kvm: kvmUsable(cpus[0]?.flags ?? '', devKvm),
    biosStrings: bios,
    network,
  }
}
