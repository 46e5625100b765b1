// Password checks and login slowing, without a daemon: the unknown-user path pays the same key
// derivation as a known user's, and the guard's decisions under an injected clock.
import assert from 'node:assert/strict'
import { scrypt, type ScryptOptions } from 'node:crypto'
import { describe, it } from 'node:test'
import { checkPassword, hashPassword, type Kdf } from '../../src/xapi/accounts.js'
import { addressKey, LoginGuard, userKey, type LoginPolicy } from '../../src/xapi/login-guard.js'
import { basicCredentials } from '../../src/http/handler.js'

/** The real scrypt, recording what each call derived with. */
function countingKdf(): { kdf: Kdf; calls: { keylen: number; saltBytes: number; options: ScryptOptions }[] } {
  const calls: { keylen: number; saltBytes: number; options: ScryptOptions }[] = []
  const kdf: Kdf = (password, salt, keylen, options) => {
    calls.push({ keylen, saltBytes: salt.length, options })
    return new Promise((resolve, reject) => scrypt(password, salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key))))
  }
  return { kdf, calls }
}

describe('password checks', () => {
  it('run the same key derivation, at the same cost, for an unknown user as for a wrong password', async () => {
    const stored = await hashPassword('right')
    const known = countingKdf()
    assert.equal(await checkPassword(stored, 'wrong', known.kdf), false)
    const unknown = countingKdf()
    assert.equal(await checkPassword(undefined, 'wrong', unknown.kdf), false)
    assert.equal(known.calls.length, 1)
    assert.deepEqual(unknown.calls, known.calls, 'same key length, salt length and scrypt parameters')
    const right = countingKdf()
    assert.equal(await checkPassword(stored, 'right', right.kdf), true)
    assert.deepEqual(right.calls, known.calls)
  })

  it('never accept anything for an unknown user, not even an empty password', async () => {
    for (const password of ['', 'root', 'flotilla-test-password']) assert.equal(await checkPassword(undefined, password), false)
  })
})

const POLICY: LoginPolicy = { addressBurst: 5, addressPerSecond: 1, userBurst: 10, userPerSecond: 2, suspectMs: 60_000, maxWaitMs: 30_000 }

/** Admits and settles one attempt at `now`; the wait it got when refused. */
function attempt(guard: LoginGuard, address: string, user: string, now: number, succeeds: boolean): number {
  const a = guard.admit(address, user, now)
  if (!a.go) return a.retryInMs
  guard.settle(a.ticket, succeeds, now)
  return 0
}

describe('the login guard', () => {
  it('lets an address make a few mistakes, then slows it to its rate', () => {
    const guard = new LoginGuard(POLICY)
    for (let i = 0; i < 5; i++) assert.equal(attempt(guard, '192.0.2.1', 'root', 0, false), 0, `mistake ${i + 1} is free`)
    assert.equal(attempt(guard, '192.0.2.1', 'root', 0, false), 1000, 'the sixth waits for a token')
    assert.equal(attempt(guard, '192.0.2.1', 'root', 999, false), 1, 'not a millisecond early')
    assert.equal(attempt(guard, '192.0.2.1', 'root', 1000, false), 0)
    let admitted = 0
    for (let t = 1000; t <= 61_000; t += 50) if (attempt(guard, '192.0.2.1', 'root', t, false) === 0) admitted++
    assert.ok(admitted >= 59 && admitted <= 61, `one attempt a second for a minute (${admitted})`)
  })

  it('lets correct logins through at any rate, and forgets them', () => {
    const guard = new LoginGuard(POLICY)
    for (let i = 0; i < 1000; i++) assert.equal(attempt(guard, '192.0.2.1', 'root', i, true), 0)
    assert.equal(guard.tracked, 0)
  })

  it('counts attempts in flight, so that concurrent guesses cannot all start before the first failure', () => {
    const guard = new LoginGuard(POLICY)
    const admitted = Array.from({ length: 20 }, () => guard.admit('192.0.2.1', 'root', 0)).filter((a) => a.go)
    assert.equal(admitted.length, 5)
    for (const a of admitted) if (a.go) guard.settle(a.ticket, true, 10)
    assert.ok(guard.admit('192.0.2.1', 'root', 10).go, 'successes give their tokens back')
  })

  it('never slows root at an address that has not failed, however much another address guesses', () => {
    const guard = new LoginGuard(POLICY)
    for (let t = 0; t < 120_000; t += 100) attempt(guard, '192.0.2.66', 'root', t, false)
    assert.equal(attempt(guard, '198.51.100.7', 'root', 120_000, true), 0)
    assert.equal(attempt(guard, '198.51.100.7', 'root', 120_001, true), 0)
  })

  it('applies the user name\'s bucket to addresses that failed recently, so spreading guesses over addresses does not help', () => {
    const guard = new LoginGuard(POLICY)
    // Twenty addresses, each within its own burst: the first failure of each marks it suspect.
    const addresses = Array.from({ length: 20 }, (_, i) => `203.0.113.${i + 1}`)
    for (const a of addresses) attempt(guard, a, 'root', 0, false)
    const waits = addresses.map((a) => attempt(guard, a, 'root', 1, false))
    assert.ok(waits.filter((w) => w > 0).length >= 10, `the user name ran out (${waits.join(' ')})`)
    assert.equal(attempt(guard, '203.0.113.1', 'admin', 2, false), 0, 'another user name is not slowed by root\'s bucket')
    assert.equal(attempt(guard, '198.51.100.7', 'root', 3, true), 0, 'an address without failures is not either')
    // Once the failure is old, the address is trusted again.
    assert.equal(attempt(guard, '203.0.113.20', 'root', 61_000, true), 0)
  })

  it('slows an IPv6 client by its /64 and knows IPv4-mapped addresses', () => {
    assert.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64')
    assert.equal(addressKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64')
    assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64')
    assert.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64')
    assert.equal(addressKey('::ffff:192.0.2.1'), '192.0.2.1')
    assert.equal(addressKey('::1'), '0:0:0:0::/64')
    const guard = new LoginGuard(POLICY)
    for (let i = 0; i < 5; i++) attempt(guard, `2001:db8:1:2::${i + 1}`, 'root', 0, false)
    assert.ok(attempt(guard, '2001:db8:1:2::99', 'root', 0, false) > 0)
  })

  it('keeps its memory bounded', () => {
    const guard = new LoginGuard(POLICY)
    for (let i = 0; i < 30_000; i++) attempt(guard, `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, `user-${i}`, i, false)
    assert.ok(guard.tracked <= 20_000, `${guard.tracked} entries`)
    assert.equal(userKey('x'.repeat(10_000)).length, 'sha256:'.length + 64)
  })
})

describe('HTTP Basic credentials', () => {
  const basic = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`
  it('split at the first colon, as xapi does', () => {
    assert.deepEqual(basicCredentials(basic('root:pa:ss')), { user: 'root', password: 'pa:ss' })
    assert.deepEqual(basicCredentials(basic('root:')), { user: 'root', password: '' })
    assert.equal(basicCredentials(basic('root')), undefined)
    assert.equal(basicCredentials('Bearer abc'), undefined)
    assert.equal(basicCredentials(undefined), undefined)
  })
})
