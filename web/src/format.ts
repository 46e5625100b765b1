// Display helpers.
export function bytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '–'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let i = 0
  while (Math.abs(n) >= 1024 && i < units.length - 1) (n /= 1024), i++
  return `${i === 0 ? n : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${units[i]}`
}

export const percent = (used: number, total: number) => (total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0)

export function xapiDate(s: unknown): string {
  const m = /^(\d{4})(\d\d)(\d\d)T(\d\d):(\d\d):(\d\d)/.exec(String(s ?? ''))
  if (!m || m[1] === '1970') return ''
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!)).toLocaleString()
}

export const GiB = 1024 ** 3
export const MiB = 1024 ** 2
