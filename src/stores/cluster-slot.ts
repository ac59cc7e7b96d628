/** Redis Cluster's key → slot mapping (CRC16/XMODEM of the hash tag or the whole key, mod 16384). */

export const SLOTS = 16384

const TABLE = new Uint16Array(256)
for (let byte = 0; byte < 256; byte++) {
  let crc = byte << 8
  for (let bit = 0; bit < 8; bit++) crc = (crc & 0x8000) !== 0 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  TABLE[byte] = crc
}

function crc16 (bytes: Buffer, start: number, end: number): number {
  let crc = 0
  for (let index = start; index < end; index++) crc = ((crc << 8) & 0xffff) ^ (TABLE[((crc >> 8) ^ (bytes[index] as number)) & 0xff] as number)
  return crc
}

/** The slot of a key or shard channel: only the first `{…}` with something inside counts, if there is one. */
export function slotOf (key: string | Buffer): number {
  const bytes = typeof key === 'string' ? Buffer.from(key) : key
  const open = bytes.indexOf(0x7b)
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1)
    if (close > open + 1) return crc16(bytes, open + 1, close) % SLOTS
  }
  return crc16(bytes, 0, bytes.length) % SLOTS
}

/** `{name}`: every key and channel carrying it lands in one slot. */
export function tag (name: string): string {
  return `{${name}}`
}
