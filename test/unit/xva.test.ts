// The pure parts of XVA: tar headers and reader, entry names, chunk placement, ova.xml writing and
// tolerant reading.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { describe, it } from 'node:test'
import { defaultRecord, getClass } from '../../src/idl/index.js'
import { candidateChunks } from '../../src/agent/xva-disks.js'
import { ChunkCursor, classifyEntry, parseCompression, sniffCompression, TAR_END, tarHeader, tarPadding, xxhashText } from '../../src/xva/format.js'
import { archiveSnapshot, parseOvaXml, tolerantRecord, writeOvaXml } from '../../src/xva/ova.js'
import { TarReader } from '../../src/xva/tar-reader.js'

const MiB = 1 << 20

function tarOf(entries: [string, Buffer][]): Buffer {
  const parts: Buffer[] = []
  for (const [name, data] of entries) parts.push(tarHeader(name, data.length), data, Buffer.alloc(tarPadding(data.length)))
  parts.push(TAR_END)
  return Buffer.concat(parts)
}

describe('XVA format', () => {
  it('writes ustar headers that Python tarfile reads, and reads them back', async () => {
    const buf = tarOf([['ova.xml', Buffer.from('<value/>')], ['Ref:3/00000000', Buffer.alloc(1000, 7)]])
    assert.equal(buf.length % 512, 0)
    const dir = mkdtempSync(join(tmpdir(), 'xva-unit-'))
    try {
      writeFileSync(join(dir, 'a.tar'), buf)
      const out = execFileSync('/usr/bin/python3', ['-c', 'import sys,tarfile\nfor m in tarfile.open(sys.argv[1]): print(m.name, m.size, m.type == tarfile.REGTYPE)', join(dir, 'a.tar')]).toString()
      assert.equal(out, 'ova.xml 8 True\nRef:3/00000000 1000 True\n')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
    const reader = new TarReader(Readable.from([buf.subarray(0, 700), buf.subarray(700)]) as AsyncIterable<Buffer>)
    const e1 = await reader.next()
    assert.deepEqual(e1, { name: 'ova.xml', type: 'file', size: 8 })
    assert.equal((await reader.data(8)).toString(), '<value/>')
    const e2 = await reader.next()
    assert.equal(e2!.name, 'Ref:3/00000000')
    assert.ok((await reader.data(1000)).equals(Buffer.alloc(1000, 7)))
    assert.equal(await reader.next(), null, 'stops at the end-of-archive marker')
  })

  it('reports a truncated archive and a corrupt header', async () => {
    const buf = tarOf([['ova.xml', Buffer.alloc(3000, 1)]])
    const r = new TarReader(Readable.from([buf.subarray(0, 2000)]) as AsyncIterable<Buffer>)
    await r.next()
    await assert.rejects(r.data(3000), (e: any) => e.code === 'IMPORT_ERROR_PREMATURE_EOF')
    const bad = Buffer.from(buf)
    bad[10] = 0x41
    await assert.rejects(new TarReader(Readable.from([bad]) as AsyncIterable<Buffer>).next(), (e: any) => e.code === 'IMPORT_ERROR')
  })

  it('classifies entry names and refuses hostile ones', () => {
    assert.deepEqual(classifyEntry('ova.xml', 'file'), { kind: 'ova' })
    assert.deepEqual(classifyEntry('Ref:10/00000012', 'file'), { kind: 'chunk', id: 'Ref:10', n: 12, name: 'Ref:10/00000012' })
    assert.deepEqual(classifyEntry('Ref:10/00000012.xxhash', 'file'), { kind: 'checksum', id: 'Ref:10', n: 12, algo: 'xxhash', of: 'Ref:10/00000012' })
    assert.equal((classifyEntry('Ref:1/00000000.checksum', 'file') as { algo: string }).algo, 'sha1')
    assert.deepEqual(classifyEntry('Ref:1/', 'directory'), { kind: 'dir', id: 'Ref:1' })
    // A chunk number without zero padding (an XO code path) is still a number.
    assert.equal((classifyEntry('Ref:1/12', 'file') as { n: number }).n, 12)
    for (const [name, type] of [['../etc/passwd', 'file'], ['/etc/passwd', 'file'], ['Ref:1/../../x', 'file'], ['Ref:1/00000000', 'symlink'], ['Ref:1/00000000', 'link'], ['dev', 'character-device']])
      assert.throws(() => classifyEntry(name!, type!), (e: any) => e.code === 'IMPORT_ERROR', `${name} ${type}`)
    assert.throws(() => classifyEntry('notes.txt', 'file'), (e: any) => e.code === 'IMPORT_ERROR_UNEXPECTED_FILE')
  })

  it('places chunks as xapi does: gaps of the first chunk length, empty keep-alives, increasing numbers', () => {
    const c = new ChunkCursor('Ref:1')
    assert.equal(c.place(0, MiB), 0)
    assert.equal(c.place(3, MiB), 3 * MiB)
    assert.equal(c.place(4, 0), 4 * MiB, 'a keep-alive does not advance')
    assert.equal(c.place(5, 100), 4 * MiB)
    assert.throws(() => c.place(5, 1), (e: any) => e.code === 'IMPORT_ERROR')
  })

  it('xxhash text, compression names and magic bytes', () => {
    assert.equal(xxhashText(0xef46db3751d8e999n), 'EF46DB3751D8E999')
    assert.equal(xxhashText(0x1n), '0000000000000001')
    assert.equal(parseCompression('true'), 'gzip')
    assert.equal(parseCompression('zstd'), 'zstd')
    assert.equal(parseCompression('false'), 'none')
    assert.equal(parseCompression(null), 'none')
    assert.equal(sniffCompression(Buffer.from([0x1f, 0x8b, 8, 0])), 'gzip')
    assert.equal(sniffCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), 'zstd')
    assert.equal(sniffCompression(Buffer.from('ova.xml')), 'none')
  })

  it('chooses the chunks to read from the map: data extents plus first and last', () => {
    const size = 100 * MiB
    assert.deepEqual(candidateChunks([{ start: 0, length: size, data: false, zero: true }], size), [0, 99])
    assert.deepEqual(candidateChunks([{ start: 5 * MiB + 10, length: MiB, data: true, zero: false }, { start: 50 * MiB, length: 64 << 10, data: true, zero: false }], size), [0, 5, 6, 50, 99])
  })
})

describe('ova.xml', () => {
  it('writes references as archive ids and reads its own output back', () => {
    const vm = { ...defaultRecord(getClass('VM')), name_label: 'a & b', VBDs: ['OpaqueRef:v1', 'OpaqueRef:other'], affinity: 'OpaqueRef:host', memory_static_max: 268435456, current_operations: { t: 'start' } }
    const snap = archiveSnapshot('VM', vm, (r) => (r === 'OpaqueRef:v1' ? 'Ref:1' : undefined))
    assert.deepEqual(snap.VBDs, ['Ref:1'])
    assert.equal(snap.affinity, 'OpaqueRef:NULL')
    assert.deepEqual(snap.current_operations, {})
    const xml = writeOvaXml([{ cls: 'VM', id: 'Ref:0', snapshot: snap }], { hostname: 'h', xapi_major: 1, xapi_minor: 20, export_vsn: 2 }).toString()
    assert.match(xml, /^<value><struct><member><name>version<\/name><value><struct>/)
    assert.match(xml, /<name>memory_static_max<\/name><value>268435456<\/value>/, 'ints as untyped strings')
    const parsed = parseOvaXml(xml)
    assert.equal(parsed.version.xapi_minor, '20')
    assert.equal(parsed.objects[0]!.id, 'Ref:0')
    const back = tolerantRecord('VM', parsed.objects[0]!.snapshot)
    assert.equal(back.name_label, 'a & b')
    assert.equal(back.memory_static_max, 268435456)
    assert.deepEqual(back.VBDs, ['Ref:1'])
  })

  it('reads as tolerantly as xapi: lower-case enums, numbers as strings, missing and unknown fields', () => {
    const xml = `<value><struct><member><name>version</name><value><struct><member><name>xapi_major</name><value>1</value></member></struct></value></member>
      <member><name>objects</name><value><array><data><value><struct><member><name>class</name><value>VM</value></member><member><name>id</name><value>Ref:0</value></member>
      <member><name>snapshot</name><value><struct><member><name>power_state</name><value>halted</value></member><member><name>HVM_shadow_multiplier</name><value>1</value></member>
      <member><name>VCPUs_max</name><value><i4>2</i4></value></member><member><name>is_a_template</name><value>true</value></member><member><name>frobnicate</name><value>x</value></member>
      <member><name>actions_after_crash</name><value>not-a-value</value></member></struct></value></member></struct></value></data></array></value></member></struct></value>`
    const rec = tolerantRecord('VM', parseOvaXml(xml).objects[0]!.snapshot)
    assert.equal(rec.power_state, 'Halted')
    assert.equal(rec.HVM_shadow_multiplier, 1)
    assert.equal(rec.VCPUs_max, 2)
    assert.equal(rec.is_a_template, true)
    assert.equal(rec.frobnicate, undefined)
    assert.equal(rec.actions_after_crash, getClass('VM').fields.get('actions_after_crash')!.default, 'an unusable value takes the default')
    assert.equal(rec.name_label, '', 'a missing field takes the default')
  })

  it('refuses what is not an archive description', () => {
    for (const xml of ['', '<value><struct>', '<methodCall/>', '<value><struct><member><name>objects</name><value>x</value></member></struct></value>', '<!DOCTYPE x [<!ENTITY a "b">]><value>&a;</value>'])
      assert.throws(() => parseOvaXml(xml), (e: any) => e.code === 'IMPORT_ERROR', xml)
  })
})
