// The host console's pure decisions (Xvnc's and xterm's argv, the display, the xterm's respawn,
// the idle teardown, the X cookie file) and the control domain's console records.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { memoryDatabase } from '../helpers/memory-db.js'
import { chooseDisplay, FIRST_DISPLAY, fitsUnixPath, respawnDelay, SCREEN, shouldTearDown, takenDisplays, xauthority, xtermArgs, xvncArgs } from '../../src/agent/host-console.js'
import { ensureControlDomain } from '../../src/xapi/host.js'
import { ensureControlDomainConsoles } from '../../src/xapi/host-console.js'

const arg = (argv: string[], flag: string) => argv[argv.indexOf(flag) + 1]

describe('the host console\'s Xvnc and xterm', () => {
  const config = { display: 23, socket: '/var/lib/flotilla/run/console/rfb.sock', authFile: '/var/lib/flotilla/run/console/xauth', name: 'box', readyFd: 3 }

  it('serves RFB on a 0600 Unix socket only, without TCP for RFB or X11, at 1024x768x24, shared, with a cookie', () => {
    const argv = xvncArgs(config)
    assert.equal(argv[0], ':23')
    assert.equal(arg(argv, '-rfbunixpath'), config.socket)
    assert.equal(arg(argv, '-rfbunixmode'), '0600')
    assert.equal(arg(argv, '-rfbport'), '-1')
    assert.equal(arg(argv, '-nolisten'), 'tcp')
    assert.equal(arg(argv, '-SecurityTypes'), 'None')
    assert.equal(arg(argv, '-geometry'), '1024x768')
    assert.equal(arg(argv, '-depth'), '24')
    assert.equal(arg(argv, '-desktop'), 'box')
    assert.equal(arg(argv, '-auth'), config.authFile)
    assert.equal(arg(argv, '-displayfd'), '3')
    assert.ok(argv.includes('-AlwaysShared'))
  })

  it('refuses a socket path that does not fit in sun_path', () => {
    assert.equal(fitsUnixPath(`/${'a'.repeat(106)}`), true)
    assert.equal(fitsUnixPath(`/${'a'.repeat(107)}`), false)
    assert.throws(() => xvncArgs({ ...config, socket: `/${'a'.repeat(120)}/rfb.sock` }), /too long/)
  })

  it('runs /bin/login in an xterm that fills the screen', () => {
    const argv = xtermArgs()
    assert.deepEqual(argv.slice(-2), ['-e', '/bin/login'])
    const [cols, rows] = arg(argv, '-geometry')!.replace('+0+0', '').split('x').map(Number)
    assert.ok(cols! * 6 <= SCREEN.width && (cols! + 1) * 6 > SCREEN.width)
    assert.ok(rows! * 13 <= SCREEN.height && (rows! + 1) * 13 > SCREEN.height)
  })

  it('takes the lowest display from FIRST_DISPLAY up that no lock file, socket or earlier attempt holds', () => {
    const taken = takenDisplays(['.X0-lock', `.X${FIRST_DISPLAY}-lock`, '.X11-unix', 'other'], ['X0', `X${FIRST_DISPLAY + 1}`, 'junk'])
    assert.deepEqual([...taken].sort((a, b) => a - b), [0, FIRST_DISPLAY, FIRST_DISPLAY + 1])
    assert.equal(chooseDisplay(taken), FIRST_DISPLAY + 2)
    assert.equal(chooseDisplay(taken, new Set([FIRST_DISPLAY + 2])), FIRST_DISPLAY + 3)
    assert.equal(chooseDisplay(new Set(Array.from({ length: 2000 }, (_, i) => i))), undefined)
  })

  it('starts the xterm again at once after a session, and backs off while it keeps failing', () => {
    assert.deepEqual(respawnDelay(60_000, 3), { delayMs: 0, quickExits: 0 })
    assert.deepEqual(respawnDelay(100, 0), { delayMs: 250, quickExits: 1 })
    assert.deepEqual(respawnDelay(100, 2), { delayMs: 1000, quickExits: 3 })
    assert.deepEqual(respawnDelay(100, 10), { delayMs: 5000, quickExits: 11 })
  })

  it('tears down only when nobody has been connected for the idle time', () => {
    assert.equal(shouldTearDown(0, 1000, 61_000, 60_000), true)
    assert.equal(shouldTearDown(0, 1000, 60_999, 60_000), false)
    assert.equal(shouldTearDown(1, 1000, 1e9, 60_000), false)
    assert.equal(shouldTearDown(0, undefined, 1e9, 60_000), false)
  })

  it('writes an Xauthority entry for any address and display', () => {
    const cookie = Buffer.alloc(16, 0xab)
    const file = xauthority(cookie)
    assert.equal(file.readUInt16BE(0), 0xffff)
    assert.equal(file.readUInt16BE(2), 0) // address
    assert.equal(file.readUInt16BE(4), 0) // display number
    assert.equal(file.readUInt16BE(6), 18)
    assert.equal(file.subarray(8, 26).toString(), 'MIT-MAGIC-COOKIE-1')
    assert.equal(file.readUInt16BE(26), 16)
    assert.deepEqual(file.subarray(28), cookie)
  })
})

describe('the control domain\'s consoles', () => {

  it('are one rfb and one vt100 console located by ref, kept across restarts and moved with the public URL', () => {
    const db = memoryDatabase()
    const host = db.transact((tx) => tx.create('host', { name_label: 'box', hostname: 'box', address: '192.0.2.2' }))
    const dom0 = db.transact((tx) => ensureControlDomain(tx, host, 'box', 2))
    const consolesOf = () =>
      (db.replica.record('VM', dom0)!.consoles as string[]).map((ref) => ({ ref, ...(db.replica.record('console', ref) as { protocol: string; location: string; uuid: string }) })).sort((a, b) => a.protocol.localeCompare(b.protocol))
    db.transact((tx) => ensureControlDomainConsoles(tx, host, 'https://192.0.2.2:8443'))
    const first = consolesOf()
    assert.deepEqual(first.map((c) => c.protocol), ['rfb', 'vt100'])
    for (const c of first) assert.equal(c.location, `https://192.0.2.2:8443/console?ref=${c.ref}`)
    db.transact((tx) => ensureControlDomainConsoles(tx, host, 'https://192.0.2.2:8443'))
    assert.deepEqual(consolesOf(), first)
    db.transact((tx) => ensureControlDomainConsoles(tx, host, 'https://192.0.2.9'))
    assert.deepEqual(consolesOf().map((c) => [c.ref, c.uuid, c.location]), first.map((c) => [c.ref, c.uuid, `https://192.0.2.9/console?ref=${c.ref}`]))
  })

  it('start again from one of a protocol that has two', () => {
    const db = memoryDatabase()
    const host = db.transact((tx) => tx.create('host', { name_label: 'box', hostname: 'box', address: '192.0.2.2' }))
    const dom0 = db.transact((tx) => ensureControlDomain(tx, host, 'box', 2))
    db.transact((tx) => {
      for (let i = 0; i < 2; i++) tx.create('console', { uuid: `u${i}`, protocol: 'rfb', VM: dom0, location: 'x', other_config: {} })
    })
    db.transact((tx) => ensureControlDomainConsoles(tx, host, 'https://h'))
    const protocols = (db.replica.record('VM', dom0)!.consoles as string[]).map((c) => db.replica.record('console', c)!.protocol).sort()
    assert.deepEqual(protocols, ['rfb', 'vt100'])
  })
})
