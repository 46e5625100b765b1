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

export async function verifyPassword(db: Database, user: string, password: string): Promise<boolean> {
  const kv = db.raw(accountKey(user))
  if (!kv) return false
  const stored = JSON.parse(kv.value) as StoredPassword
  const expected = Buffer.from(stored.hash, 'base64')
  const actual = await scrypt(password, Buffer.from(stored.salt, 'base64'), expected.length, { N: stored.N, r: stored.r, p: stored.p })
  return timingSafeEqual(expected, actual)
}

export function accountExists(tx: Tx, user: string): boolean {
  return tx.readRaw(accountKey(user)) !== undefined
}

export async function setPassword(db: Database, user: string, password: string): Promise<void> {
  const stored = await hashPassword(password)
  await db.transact((tx) => tx.writeRaw(accountKey(user), stored))
}
