import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'

/**
 * What the benchmark reads from /proc about the processes it started: CPU time (so a saturated driver
 * cannot hide the server's cost) and resident memory (for bytes per idle connection).
 */

function sysconf (name: string, fallback: number): number {
  try {
    return Number(execFileSync('getconf', [name], { encoding: 'utf8' }).trim()) || fallback
  } catch {
    return fallback
  }
}

const TICKS_PER_SECOND = sysconf('CLK_TCK', 100)
const PAGE_BYTES = sysconf('PAGESIZE', 4096)

/** utime + stime of a process, in seconds (resolution 1/CLK_TCK). */
export function cpuSeconds (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND
}

export function rssBytes (pid: number): number {
  return Number(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]) * PAGE_BYTES
}

export function totalCpuSeconds (pids: number[]): number {
  return pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0)
}

/** Soft and hard RLIMIT_NOFILE of this process. */
export function openFileLimits (): { soft: number, hard: number } {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((row) => row.startsWith('Max open files')) ?? ''
  const [soft, hard] = line.replace('Max open files', '').trim().split(/\s+/)
  const parse = (value: string | undefined): number => value === 'unlimited' ? Number.POSITIVE_INFINITY : Number(value)
  return { soft: parse(soft), hard: parse(hard) }
}

/**
 * Raises this process's RLIMIT_NOFILE (soft and hard) to `wanted` with prlimit(1), for the children it
 * starts next; raising the hard limit needs CAP_SYS_RESOURCE. Returns the limits afterwards.
 */
export function raiseOpenFileLimit (wanted: number): { soft: number, hard: number } {
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${wanted}:${wanted}`], { stdio: 'ignore' })
  } catch {
    // Not allowed or no prlimit: the caller reads the limits again and says what is missing.
  }
  return openFileLimits()
}

/** How many ephemeral ports one source address has (net.ipv4.ip_local_port_range). */
export function ephemeralPorts (): number {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    return (high ?? 0) - (low ?? 0) + 1
  } catch {
    return 16_384
  }
}

export function loadAverage (): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
}

export function machine (): string {
  const cpu = cpus()
  return `${cpu.length} × ${cpu[0]?.model ?? 'unknown CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB, ` +
    `Linux ${readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}, Node ${process.version}`
}
