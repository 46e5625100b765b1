// What QEMU's events mean for a VM (qemu/events.ts): why it stopped, and pauses on full disks.
// The event shapes are QEMU 7.2's (qapi/run-state.json, qapi/block-core.json).
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { StopReason } from '../../src/qemu/backend.js'
import { classifyEvent } from '../../src/qemu/events.js'

type Event = { event: string; data: Record<string, unknown> }

/** The stop reason after a VM's events, from a fresh link (killed until the guest says otherwise). */
const reasonAfter = (events: Event[]): StopReason => events.reduce<StopReason>((reason, e) => classifyEvent(reason, e).reason, 'killed')

describe('QEMU event classification', () => {
  it('a guest poweroff is a shutdown', () => {
    assert.equal(reasonAfter([{ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' } }]), 'shutdown')
  })

  it('a guest reboot that ends QEMU (reboot=shutdown) is a reboot', () => {
    assert.equal(reasonAfter([{ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-reset' } }]), 'reboot')
  })

  it('a SHUTDOWN the guest did not ask for (quit, signal) is a kill', () => {
    assert.equal(reasonAfter([{ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } }]), 'killed')
    assert.equal(reasonAfter([{ event: 'SHUTDOWN', data: { guest: false, reason: 'host-signal' } }]), 'killed')
    assert.equal(reasonAfter([]), 'killed', 'a process that vanished without a word was killed')
  })

  it('a panic stays a crash through the SHUTDOWN that follows it', () => {
    assert.equal(reasonAfter([{ event: 'GUEST_PANICKED', data: { action: 'pause' } }]), 'crash')
    assert.equal(reasonAfter([{ event: 'GUEST_PANICKED', data: { action: 'pause' } }, { event: 'SHUTDOWN', data: { guest: true, reason: 'guest-panic' } }]), 'crash')
    assert.equal(reasonAfter([{ event: 'GUEST_PANICKED', data: { action: 'pause' } }, { event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } }]), 'crash')
  })

  it('other events change nothing', () => {
    for (const reason of ['shutdown', 'reboot', 'crash', 'killed'] as const) {
      assert.equal(classifyEvent(reason, { event: 'RESET', data: { guest: true, reason: 'guest-reset' } }).reason, reason)
      assert.equal(classifyEvent(reason, { event: 'STOP', data: {} }).reason, reason)
    }
  })

  it('a write error that stops the VM is a pause, with ENOSPC told apart', () => {
    const full = classifyEvent('killed', { event: 'BLOCK_IO_ERROR', data: { device: '', 'node-name': 'd0', operation: 'write', action: 'stop', nospace: true, reason: 'No space left on device' } })
    assert.deepEqual(full, { reason: 'killed', ioErrorPause: { device: '', noSpace: true } })
    const failed = classifyEvent('killed', { event: 'BLOCK_IO_ERROR', data: { device: 'd1-dev', operation: 'write', action: 'stop', reason: 'Input/output error' } })
    assert.deepEqual(failed, { reason: 'killed', ioErrorPause: { device: 'd1-dev', noSpace: false } })
  })

  it('a write error QEMU reports to the guest or ignores is no pause', () => {
    for (const action of ['report', 'ignore']) {
      assert.deepEqual(classifyEvent('killed', { event: 'BLOCK_IO_ERROR', data: { device: 'd0-dev', operation: 'write', action, nospace: true } }), { reason: 'killed' })
    }
  })
})
