/**
 * A strict reader of the Prometheus text exposition format (0.0.4): it throws, naming the line, on
 * anything a Prometheus server would refuse, and checks histogram invariants.
 */
export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

export interface Family {
  name: string
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'
  help: string
  samples: Sample[]
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

/** As Prometheus reads values (Go's ParseFloat): NaN and Inf in any case (prom-client writes "Nan"). */
function parseValue (text: string, where: string): number {
  const special = text.toLowerCase()
  if (special === 'nan') return Number.NaN
  if (special === '+inf' || special === 'inf') return Number.POSITIVE_INFINITY
  if (special === '-inf') return Number.NEGATIVE_INFINITY
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`${where}: bad value ${text}`)
  return Number(text)
}

function parseLabels (text: string, where: string): Record<string, string> {
  const labels: Record<string, string> = {}
  let rest = text
  while (rest !== '') {
    const match = LABEL.exec(rest)
    if (match === null) throw new Error(`${where}: bad labels {${text}}`)
    const [whole, name, value] = match as unknown as [string, string, string]
    if (name in labels) throw new Error(`${where}: label ${name} twice`)
    labels[name] = value.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\')
    rest = rest.slice(whole.length)
  }
  return labels
}

/** The family a sample name belongs to: histograms and summaries add _bucket, _sum and _count. */
function familyOf (families: Map<string, Family>, name: string): Family | undefined {
  const exact = families.get(name)
  if (exact !== undefined) return exact
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue
    const family = families.get(name.slice(0, -suffix.length))
    if (family === undefined) continue
    if (family.type === 'histogram' || (family.type === 'summary' && suffix !== '_bucket')) return family
  }
  return undefined
}

export function parsePrometheus (text: string): Map<string, Family> {
  const families = new Map<string, Family>()
  const seen = new Set<string>()
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline')
  for (const [index, line] of text.split('\n').entries()) {
    const where = `line ${index + 1}`
    if (line === '') continue
    if (line.startsWith('#')) {
      const [, keyword, name, ...rest] = line.split(' ')
      if (keyword !== 'HELP' && keyword !== 'TYPE') continue
      if (name === undefined || !METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name in ${line}`)
      const family = families.get(name) ?? { name, type: 'untyped', help: '', samples: [] }
      if (keyword === 'HELP') family.help = rest.join(' ')
      else {
        const type = rest.join(' ')
        if (!TYPES.has(type)) throw new Error(`${where}: unknown type ${type}`)
        if (family.samples.length > 0) throw new Error(`${where}: TYPE of ${name} after its samples`)
        family.type = type as Family['type']
      }
      families.set(name, family)
      continue
    }
    const match = SAMPLE.exec(line)
    if (match === null) throw new Error(`${where}: not a sample: ${line}`)
    const [, name, , labelText, valueText] = match as unknown as [string, string, string | undefined, string | undefined, string]
    const family = familyOf(families, name)
    if (family === undefined) throw new Error(`${where}: sample ${name} has no TYPE`)
    const labels = parseLabels(labelText ?? '', where)
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (seen.has(key)) throw new Error(`${where}: duplicate sample ${line}`)
    seen.add(key)
    family.samples.push({ name, labels, value: parseValue(valueText, where) })
  }
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family)
  return families
}

function checkHistogram (family: Family): void {
  const series = new Map<string, Sample[]>()
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels
    const key = JSON.stringify(Object.entries(rest).sort())
    series.set(key, [...(series.get(key) ?? []), sample])
  }
  for (const [key, samples] of series) {
    const buckets = samples.filter((sample) => sample.name.endsWith('_bucket'))
    const count = samples.find((sample) => sample.name.endsWith('_count'))
    let previous = { le: Number.NEGATIVE_INFINITY, value: 0 }
    for (const bucket of buckets) {
      const le = parseValue(bucket.labels.le ?? '', `${family.name} bucket`)
      if (le <= previous.le || bucket.value < previous.value) throw new Error(`${family.name}${key}: buckets not cumulative`)
      previous = { le, value: bucket.value }
    }
    if (previous.le !== Number.POSITIVE_INFINITY || count === undefined || count.value !== previous.value) {
      throw new Error(`${family.name}${key}: the +Inf bucket must equal _count`)
    }
  }
}

/** The value of one series; 0 when it was never set (counters with labels appear on first use). */
export function valueOf (families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const family = familyOf(families, name)
  if (family === undefined) throw new Error(`no metric family for ${name}`)
  const sample = family.samples.find((item) => item.name === name &&
    Object.entries(labels).every(([key, value]) => item.labels[key] === value) &&
    Object.keys(item.labels).length === Object.keys(labels).length)
  return sample?.value ?? 0
}
