// What QEMU's events mean for a VM: a pure decision, fed one QMP event at a time.
import type { StopReason } from './backend.js'
import type { QmpEvent } from './qmp.js'

export interface EventMeaning {
  /** Why the VM stops if its process ends now. */
  reason: StopReason
  /** The event was QEMU pausing the VM on a failed disk write. */
  ioErrorPause?: { device: string; noSpace: boolean }
}

/**
 * The meaning of `event`, given the stop reason so far (`killed` until the guest says otherwise).
 * A SHUTDOWN the guest asked for is a poweroff, or a reboot when QEMU ends on reboot (guest-reset);
 * one it did not ask for (quit, signal) is a kill. A panic ends in a SHUTDOWN too, and stays a crash.
 */
export function classifyEvent(reason: StopReason, event: Pick<QmpEvent, 'event' | 'data'>): EventMeaning {
  const data = event.data ?? {}
  switch (event.event) {
    case 'GUEST_PANICKED':
      return { reason: 'crash' }
    case 'SHUTDOWN':
      if (reason === 'crash') return { reason }
      return { reason: !data.guest ? 'killed' : data.reason === 'guest-reset' ? 'reboot' : 'shutdown' }
    case 'BLOCK_IO_ERROR':
      return data.action === 'stop' ? { reason, ioErrorPause: { device: String(data.device ?? ''), noSpace: Boolean(data.nospace) } } : { reason }
    default:
      return { reason }
  }
}
