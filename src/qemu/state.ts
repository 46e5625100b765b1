// A VM's memory and device state to and from a file, through QEMU's migration to a command
// (suspend, resume, checkpoints).
import type { QmpClient } from './qmp.js'

/** Shell-quotes a path for QEMU's exec: migration URIs (QEMU 7.2 has no file: URI). */
const shellQuote = (path: string) => `'${path.replace(/'/g, `'\\''`)}'`

async function waitForMigration(qmp: QmpClient): Promise<void> {
  for (;;) {
    const info = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate')
    if (info.status === 'completed') return
    if (info.status === 'failed' || info.status === 'cancelled') throw new Error(`saving or loading the VM state failed: ${info['error-desc'] ?? info.status}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

export async function saveState(qmp: QmpClient, statePath: string): Promise<void> {
  // The default 128 MiB/s cap also throttles exec: migration (reference/qemu-lab.md §9).
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 8 * 1024 ** 3 })
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(statePath)}` })
  await waitForMigration(qmp)
}

/** Loads a saved state into a QEMU started with -incoming defer. */
export async function loadState(qmp: QmpClient, statePath: string): Promise<void> {
  await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(statePath)}` })
  await waitForMigration(qmp)
}
