// Local accounts: passwords kept in the pool database as slow salted scrypt hashes.
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import type { Database, Tx } from '../db/database.js'
import { PREFIX } from '../db/etcd.js'

const scrypt = (password: string, salt: Buffer, keylen: number, options: ScryptOptions) =>
  new Promise<Buffer>((resolve, reject) => scryptCb(password, salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key))))

const PARAMS = { N: 16384, r: 8, p: 1 }
const KEY_LENGTH = 32

interface StoredPassword {
  salt: string
  hash: string
  N: number
  r: number
  p: number
}

export const accountKey = (user: string) => `${PREFIX}account/${encodeURIComponent(user)}`

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16)
  const hash = await scrypt(password, salt, KEY_LENGTH, PARAMS)
  const stored: StoredPassword = { salt: salt.toString('base64'), hash: hash.toString('base64'), ...PARAMS }
  return JSON.stringify(stored)
}

/** The key derivation a password check runs; a parameter so that tests can see it run. */
export type Kdf = (password: string, salt: Buffer, keylen: number, options: ScryptOptions) => Promise<Buffer>

/**
 * What an unknown user's password is checked against: the cost of a real account, and a random
 * hash no password gives. So a failure takes as long whether the user exists or not.
 */
const NO_ACCOUNT: StoredPassword = { salt: randomBytes(16).toString('base64'), hash: randomBytes(KEY_LENGTH).toString('base64'), ...PARAMS }

/** Whether `password` matches a stored password (`undefined`: no such account, which never matches). */
export async function checkPassword(stored: string | undefined, password: string, kdf: Kdf = scrypt): Promise<boolean> {
  const record = stored === undefined ? NO_ACCOUNT : (JSON.parse(stored) as StoredPassword)
  const expected = Buffer.from(record.hash, 'base64')
  const actual = await kdf(password, Buffer.from(record.salt, 'base64'), expected.length, { N: record.N, r: record.r, p: record.p })
  return timingSafeEqual(expected, actual) && stored !== undefined
}

export async function verifyPassword(db: Database, user: string, password: string): Promise<boolean> {
  return checkPassword(db.raw(accountKey(user))?.value, password)
}

export function accountExists(tx: Tx, user: string): boolean {
  return tx.readRaw(accountKey(user)) !== undefined
}

export async function setPassword(db: Database, user: string, password: string): Promise<void> {
  const stored = await hashPassword(password)
  await db.transact((tx) => tx.writeRaw(accountKey(user), stored))
}
