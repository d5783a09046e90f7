// Every UI string has both languages: the same keys in English and Swahili, none empty, the
// same {placeholders} in both, and every key the sources name literally is defined.
// Run by `npm run build` (a build with a missing translation fails) and by tests/agent_app.rs.
import { readFileSync, readdirSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { STRINGS } from '../src/i18n.js'

const here = dirname(fileURLToPath(import.meta.url))
const problems = []
const langs = Object.keys(STRINGS)
if (langs.sort().join(',') !== 'en,sw') problems.push(`languages are ${langs}, not en and sw`)
const holes = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort().join(',')
for (const key of new Set([...Object.keys(STRINGS.en), ...Object.keys(STRINGS.sw)])) {
  const en = STRINGS.en[key]
  const sw = STRINGS.sw[key]
  if (typeof en !== 'string' || !en.trim()) problems.push(`${key}: no English`)
  if (typeof sw !== 'string' || !sw.trim()) problems.push(`${key}: no Swahili`)
  if (typeof en === 'string' && typeof sw === 'string' && holes(en) !== holes(sw)) {
    problems.push(`${key}: placeholders differ (en {${holes(en)}}, sw {${holes(sw)}})`)
  }
}
// Literal keys: t('key'), t(`key`) without ${…}, and the 'rule.…' keys rules.js returns.
const src = join(here, '..', 'src')
let used = 0
for (const file of readdirSync(src).filter((f) => f.endsWith('.js'))) {
  const text = readFileSync(join(src, file), 'utf8')
  for (const m of text.matchAll(/\bt\(\s*['`]([^'`$]+)['`]/g)) {
    used++
    if (!(m[1] in STRINGS.en)) problems.push(`${file}: t('${m[1]}') is not defined`)
  }
  for (const m of text.matchAll(/\[\s*'(rule\.[\w.]+)'/g)) {
    used++
    if (!(m[1] in STRINGS.en)) problems.push(`${file}: '${m[1]}' is not defined`)
  }
}
// Keys built at run time: the statuses and kinds soko sends, the error codes it documents.
const dynamic = [
  ...['pending', 'active'].map((s) => `m.${s}`),
  ...['stall', 'product', 'delete', 'link', 'pending', 'approved', 'rejected', 'withdrawn'].map((s) => `p.${s}`),
  ...['merchants', 'proposals', 'notices'].map((s) => `nav.${s}`),
  ...['soko', 'signer', 'relay'].map((s) => `err.timeout.${s}`),
  ...['not_an_agent', 'not_linked', 'unknown_proposal', 'bad_request', 'invalid', 'internal', 'rate_limited',
    'stale', 'replayed', 'invite_unknown', 'invite_used', 'invite_expired', 'invite_wrong_role', 'already_registered',
    'bad_signature', 'signer_mismatch', 'wrong_recipient', 'wrong_kind'].map((c) => `err.${c}`),
]
for (const key of dynamic) if (!(key in STRINGS.en)) problems.push(`${key} (built at run time) is not defined`)
if (problems.length) {
  console.error(`UI strings: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`)
  process.exit(1)
}
console.log(`UI strings: ${Object.keys(STRINGS.en).length} keys in en and sw, ${used} literal uses and ${dynamic.length} run-time keys defined`)
