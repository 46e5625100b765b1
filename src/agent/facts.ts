// Facts about this machine that the host record carries: CPUs, memory, versions, hostname.
import { readFile } from 'node:fs/promises'
import os from 'node:os'
import { runProgram } from '../lib/programs.js'

export interface CpuFacts {
  vendor: string
  modelname: string
  model: string
  family: string
  stepping: string
  speed: string
  flags: string
  features: string
}

export interface HostFacts {
  hostname: string
  cpuCount: number
  cpus: CpuFacts[]
  socketCount: number
  memoryTotal: number
  memoryFree: number
  kernel: string
  qemuVersion: string
  kvm: boolean
}

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

async function qemuVersion(): Promise<string> {
  try {
    const { stdout } = await runProgram('qemu-system-x86_64', ['--version'], { timeout: 5000 })
    return /version (\S+)/.exec(stdout)?.[1] ?? ''
  } catch {
    return ''
  }
}

export async function readHostFacts(): Promise<HostFacts> {
  const [cpuinfo, meminfo, devKvm, qemu] = await Promise.all([
    readFile('/proc/cpuinfo', 'utf8'),
    readFile('/proc/meminfo', 'utf8'),
    readFile('/dev/kvm').then(() => true, (e: NodeJS.ErrnoException) => e.code !== 'ENOENT'),
    qemuVersion(),
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
  }
}
