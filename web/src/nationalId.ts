// Resident identity numbers (GB 11643-1999), checked in the browser before the server
// (which is authoritative) sees them. Mirrors server/identity.py.

const WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2] as const
const CHECK = '10X98765432'
const SHAPE = /^[1-9]\d{16}[\dX]$/
const PROVINCES = new Set([
  '11', '12', '13', '14', '15', '21', '22', '23', '31', '32', '33', '34', '35', '36', '37',
  '41', '42', '43', '44', '45', '46', '50', '51', '52', '53', '54', '61', '62', '63', '64',
  '65', '71', '81', '82',
])

export type NationalIdProblem =
  | { kind: 'length'; length: number }
  | { kind: 'shape' }
  | { kind: 'region' }
  | { kind: 'date' }
  | { kind: 'checksum' }

export interface NationalId {
  value: string
  region: string
  /** YYYY-MM-DD */
  birthDate: string
  sex: 'male' | 'female'
}

export function checkCharacter(first17: string): string {
  let total = 0
  for (let i = 0; i < 17; i++) total += Number(first17[i]) * (WEIGHTS[i] ?? 0)
  return CHECK[total % 11] ?? ''
}

export function normaliseNationalId(raw: string): string {
  return raw.trim().toUpperCase()
}

export function parseNationalId(raw: string): NationalId | NationalIdProblem {
  const value = normaliseNationalId(raw)
  if (value.length !== 18) return { kind: 'length', length: value.length }
  if (!SHAPE.test(value)) return { kind: 'shape' }
  if (!PROVINCES.has(value.slice(0, 2))) return { kind: 'region' }
  const year = Number(value.slice(6, 10))
  const month = Number(value.slice(10, 12))
  const day = Number(value.slice(12, 14))
  const date = new Date(Date.UTC(year, month - 1, day))
  const valid = date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day
  if (!valid || year < 1880 || date.getTime() > Date.now()) return { kind: 'date' }
  if (checkCharacter(value.slice(0, 17)) !== value[17]) return { kind: 'checksum' }
  return {
    value,
    region: value.slice(0, 6),
    birthDate: `${value.slice(6, 10)}-${value.slice(10, 12)}-${value.slice(12, 14)}`,
    sex: Number(value[16]) % 2 === 1 ? 'male' : 'female',
  }
}

export function isNationalId(result: NationalId | NationalIdProblem): result is NationalId {
  return 'value' in result
}

/** Looks like a complete number (then a search is by ID, not by name). */
export function looksLikeNationalId(raw: string): boolean {
  return /^\d{17}[\dXx]$/.test(raw.trim())
}

/** The form shown in lists: region code, asterisks, check character. */
export function maskNationalId(value: string): string {
  return value.length === 18 ? value.slice(0, 6) + '*'.repeat(11) + value.slice(-1) : '*'.repeat(value.length)
}
