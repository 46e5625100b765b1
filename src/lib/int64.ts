// XenAPI ints are int64. Flotilla holds one as a number when it is a safe integer (the common
// case, and what arithmetic elsewhere expects) and as a bigint beyond ±(2^53 − 1), so every
// value in [−2^63, 2^63 − 1] is kept exactly. JSON (database rows, JSON-RPC replies) carries
// both as bare number tokens, as xapi's JSON does.

export type Int64 = number | bigint

const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n
/** Digits of the longest int64 (2^63 is 19 digits); longer ones need no BigInt to be refused. */
const INT64_DIGITS = 19
const DECIMAL = /^[+-]?\d+$/

/** The int64 a decimal text denotes, or undefined if it is not one or lies outside int64. */
export function parseInt64(text: string): Int64 | undefined {
  if (!DECIMAL.test(text)) return undefined
  const n = Number(text)
  // A double rounds monotonically, so a safe result means the text was that very integer.
  if (Number.isSafeInteger(n)) return n || 0
  if (text.replace(/^[+-]?0*/, '').length > INT64_DIGITS) return undefined
  const b = BigInt(text)
  return b >= INT64_MIN && b <= INT64_MAX ? b : undefined
}

// Node's JSON.rawJSON (not yet in TypeScript's lib): a value JSON.stringify writes verbatim.
const rawJSON = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON

/**
 * A number token of 16 or more digits: only such tokens can hold an integer beyond 2^53 (the
 * check may also hit long strings or fractions, which merely costs the slower path).
 */
const LONG_DIGITS = /\d{16}/

/** Bigints as their digits; integral doubles beyond 2^53 (floats) in exponent form, so they read back as floats. */
function exactReplacer(_key: string, v: unknown): unknown {
  if (typeof v === 'bigint') return rawJSON(v.toString())
  if (typeof v === 'number' && Number.isInteger(v) && !Number.isSafeInteger(v)) return rawJSON(v.toExponential())
  return v
}

/** JSON.stringify for values that may hold int64 bigints. */
export function toJson(value: unknown): string {
  try {
    const text = JSON.stringify(value)
    if (!LONG_DIGITS.test(text)) return text
  } catch (err) {
    // "Do not know how to serialize a BigInt": the exact path below knows.
    if (!(err instanceof TypeError)) throw err
  }
  return JSON.stringify(value, exactReplacer)
}

/** JSON.parse that reads integer tokens beyond 2^53 as exact int64 bigints. */
export function fromJson(text: string): unknown {
  if (!LONG_DIGITS.test(text)) return JSON.parse(text)
  return JSON.parse(text, (_key, v: unknown, context?: { source?: string }) =>
    typeof v === 'number' && !Number.isSafeInteger(v) && context?.source !== undefined ? (parseInt64(context.source) ?? v) : v,
  )
}
