// The pool's CPU as xapi levels it (create_misc.ml create_pool_cpuinfo): the master's vendor, the
// hosts' CPUs and sockets summed, and the features every host has. Flotilla's features are the
// CPU flags the kernel reports, so the pool's are the flags all hosts share, in the first host's order.

type CpuInfo = Readonly<Record<string, string>>

const FEATURE_KEYS = ['features_hvm_host', 'features_pv_host'] as const

/** A host's cpu_info feature keys, from its CPU flags. */
export function hostCpuFeatures(flags: string): Record<(typeof FEATURE_KEYS)[number], string> {
  return { features_hvm_host: flags, features_pv_host: flags }
}

export function poolCpuInfo(masterVendor: string, hosts: readonly CpuInfo[]): Record<string, string> {
  const sum = (key: string) => String(hosts.reduce((n, h) => n + (Number(h[key]) || 0), 0))
  const common = (key: string) => {
    const [first, ...rest] = hosts.map((h) => (h[key] ?? h.flags ?? '').split(/\s+/).filter(Boolean))
    const shared = rest.map((words) => new Set(words))
    return (first ?? []).filter((w) => shared.every((s) => s.has(w))).join(' ')
  }
  return {
    vendor: masterVendor,
    cpu_count: sum('cpu_count'),
    socket_count: sum('socket_count'),
    ...Object.fromEntries(FEATURE_KEYS.map((k) => [k, common(k)])),
  }
}
