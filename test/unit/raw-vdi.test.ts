// Pure parts of the raw VDI transfer: zero-run splitting, export planning, NBD framing, query rules.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { exportPlan } from '../../src/agent/vdi-transfer.js'
import { dataRuns } from '../../src/agent/block-writes.js'
import { encodeOptGo, encodeRequest, NbdCmd } from '../../src/qemu/nbd.js'
import { expectedLength, parseFormat, UNKNOWN_LENGTH } from '../../src/http/raw-vdi.js'
import { statusFor } from '../../src/http/handler.js'

describe('raw VDI transfer', () => {
  it('splits blocks into data and zero runs at granule boundaries', () => {
    const buf = Buffer.alloc(10)
    buf[0] = 1
    buf[9] = 2
    assert.deepEqual(dataRuns(buf, 4), [
      { offset: 0, length: 4, zero: false },
      { offset: 4, length: 4, zero: true },
      { offset: 8, length: 2, zero: false },
    ])
    assert.deepEqual(dataRuns(Buffer.alloc(8), 4), [{ offset: 0, length: 8, zero: true }])
    assert.deepEqual(dataRuns(Buffer.alloc(0), 4), [])
    const big = Buffer.alloc(5 << 20)
    big[(5 << 20) - 1] = 1
    assert.deepEqual(dataRuns(big, 1 << 20), [{ offset: 0, length: 4 << 20, zero: true }, { offset: 4 << 20, length: 1 << 20, zero: false }])
  })

  it('plans exports: data extents read in chunks, zero and unallocated extents synthesized', () => {
    const plan = exportPlan([
      { start: 0, length: 5, data: true, zero: false },
      { start: 5, length: 3, data: false, zero: true },
      { start: 8, length: 2, data: true, zero: true },
    ], 2)
    assert.deepEqual(plan, [
      { start: 0, length: 2, read: true }, { start: 2, length: 2, read: true }, { start: 4, length: 1, read: true },
      { start: 5, length: 2, read: false }, { start: 7, length: 1, read: false },
      { start: 8, length: 2, read: false },
    ])
  })

  it('frames NBD requests and NBD_OPT_GO as the protocol says', () => {
    const r = encodeRequest(NbdCmd.Write, 7n, 2 ** 40, 65536)
    assert.equal(r.length, 28)
    assert.equal(r.readUInt32BE(0), 0x25609513)
    assert.equal(r.readUInt16BE(6), 1)
    assert.equal(r.readBigUInt64BE(8), 7n)
    assert.equal(r.readBigUInt64BE(16), 2n ** 40n)
    assert.equal(r.readUInt32BE(24), 65536)
    const go = encodeOptGo('disk')
    assert.equal(go.subarray(0, 8).toString(), 'IHAVEOPT')
    assert.equal(go.readUInt32BE(8), 7)
    assert.equal(go.readUInt32BE(12), 4 + 4 + 2)
    assert.equal(go.subarray(20, 24).toString(), 'disk')
  })

  it('reads the query and headers as xapi and XO use them', () => {
    assert.equal(parseFormat(null, '/x'), 'raw')
    assert.equal(parseFormat('qcow2', '/x'), 'qcow2')
    assert.equal(parseFormat('vhd', '/x'), 'vhd')
    assert.throws(() => parseFormat('tar', '/x'), /NOT_IMPLEMENTED.*not supported yet/)
    assert.throws(() => parseFormat('zip', '/x'), /unknown format/)
    assert.equal(expectedLength(undefined), 0)
    assert.equal(expectedLength('42'), 42)
    assert.equal(expectedLength(String(UNKNOWN_LENGTH)), null)
    assert.throws(() => expectedLength('x'), /IMPORT_ERROR/)
    assert.equal(statusFor('SESSION_INVALID'), 401)
    assert.equal(statusFor('HANDLE_INVALID'), 404)
    assert.equal(statusFor('VDI_TOO_SMALL'), 400)
    assert.equal(statusFor('NOT_IMPLEMENTED'), 501)
  })
})
