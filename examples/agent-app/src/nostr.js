// The app's whole Nostr side: the relay pool, the NIP-46 remote signer (the agent's only
// key), and NIP-17 DMs to soko's bot (kinds/dms.md) sealed and opened through that signer.
import { SimplePool } from 'nostr-tools/pool'
import { BunkerSigner, parseBunkerInput, createNostrConnectURI } from 'nostr-tools/nip46'
import { generateSecretKey, getPublicKey, getEventHash, verifyEvent } from 'nostr-tools/pure'
import { createWrap } from 'nostr-tools/nip59'
import { bytesToHex, hexToBytes } from 'nostr-tools/utils'
import * as nip19 from 'nostr-tools/nip19'
import * as nip44 from 'nostr-tools/nip44'

/** How long soko, or the signer, may take to answer before the app says so. */
export const ANSWER_TIMEOUT_MS = 45_000
/** The kind of soko's registration event (kinds/agents.md). */
export const REGISTRATION_KIND = 29470

/** A hex public key from an npub or hex; null when it is neither. */
export function toHexKey(text) {
  const t = (text || '').trim()
  if (/^[0-9a-f]{64}$/i.test(t)) return t.toLowerCase()
  try {
    const d = nip19.decode(t)
    if (d.type === 'npub') return d.data
  } catch {
    // not bech32
  }
  return null
}

export function npubOf(hex) {
  try {
    return nip19.npubEncode(hex)
  } catch {
    return hex
  }
}

/** Rejects after `ms` with an error whose `code` is `timeout`. */
export function withTimeout(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const e = new Error(`${what}: no answer within ${Math.round(ms / 1000)} s`)
      e.code = 'timeout'
      e.what = what
      reject(e)
    }, ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** A fresh client key and the nostrconnect:// URI a signer app scans. */
export function newConnectOffer(relays) {
  const clientSk = generateSecretKey()
  const secret = bytesToHex(generateSecretKey()).slice(0, 16)
  const uri = createNostrConnectURI({
    clientPubkey: getPublicKey(clientSk),
    relays,
    secret,
    name: 'soko agent app',
    perms: ['sign_event:13', `sign_event:${REGISTRATION_KIND}`, 'nip44_encrypt', 'nip44_decrypt'],
  })
  // `metadata` is the older spelling of the app's name, which rust-nostr's signers require.
  const metadata = encodeURIComponent(JSON.stringify({ name: 'soko agent app' }))
  return { clientSk: bytesToHex(clientSk), uri: `${uri}&metadata=${metadata}` }
}

/**
 * The connection to the relay and to the remote signer. `onStatus(connected)` tells when
 * the relay is reachable; `onMessage(json)` gets every message soko's bot sends.
 */
export class Link {
  constructor({ relay, bot, onStatus }) {
    this.relay = relay
    this.bot = bot
    this.onStatus = onStatus || (() => {})
    this.pool = new SimplePool({ enableReconnect: true, enablePing: true })
    this.signer = null
    this.me = null
    this.waiting = new Map()
    this.onMessage = () => {}
    this.sub = null
    this.seen = loadSeen()
    this.closed = false
    this.watch()
  }

  /** Keeps telling whether the relay is reachable, and reconnects when it comes back. */
  async watch() {
    if (this.closed) return
    try {
      await this.pool.ensureRelay(this.relay, { connectionTimeout: 6000 })
      this.onStatus(this.pool.listConnectionStatus().get(normal(this.relay)) !== false)
    } catch {
      this.onStatus(false)
    }
    this.watchTimer = setTimeout(() => this.watch(), 3000)
  }

  close() {
    this.closed = true
    clearTimeout(this.watchTimer)
    this.sub?.close()
    this.signer?.close()
    this.pool.destroy()
  }

  /** Logs in with a pasted bunker:// URI; returns the session to remember. */
  async loginBunker(uri) {
    const bp = await parseBunkerInput(uri.trim())
    if (!bp) {
      const e = new Error('not a bunker:// URI')
      e.code = 'bad_bunker'
      throw e
    }
    const clientSk = generateSecretKey()
    const signer = BunkerSigner.fromBunker(clientSk, bp, { pool: this.pool })
    await withTimeout(signer.connect(), ANSWER_TIMEOUT_MS, 'signer')
    return this.useSigner(signer, { clientSk: bytesToHex(clientSk), bunker: bp })
  }

  /**
   * Waits for a signer app to take a nostrconnect:// offer: NIP-46 has it answer with the
   * offer's secret; rust-nostr's signers (0.44) send the secret in a `connect` request
   * instead. Either way the sender is the signer, and the session is then a bunker's.
   */
  async loginConnect(offer, abort) {
    const clientSk = hexToBytes(offer.clientSk)
    const uri = new URL(offer.uri)
    const secret = uri.searchParams.get('secret')
    const relays = uri.searchParams.getAll('relay')
    const signerKey = await new Promise((resolve, reject) => {
      const sub = this.pool.subscribe(relays, { kinds: [24133], '#p': [getPublicKey(clientSk)], limit: 0 }, {
        onevent: (event) => {
          let message
          try {
            message = JSON.parse(nip44.decrypt(event.content, nip44.getConversationKey(clientSk, event.pubkey)))
          } catch {
            return
          }
          const answered = message.result === secret
          const asked = message.method === 'connect' && Array.isArray(message.params) && message.params[1] === secret
          if (secret && (answered || asked)) {
            sub.close()
            resolve(event.pubkey)
          }
        },
      })
      abort.addEventListener('abort', () => {
        sub.close()
        reject(new Error('aborted'))
      })
    })
    const bunker = { pubkey: signerKey, relays, secret }
    const signer = BunkerSigner.fromBunker(clientSk, bunker, { pool: this.pool })
    return this.useSigner(signer, { clientSk: offer.clientSk, bunker })
  }

  /** Resumes a remembered session: the signer knows this client key already. */
  async resume(session) {
    const signer = BunkerSigner.fromBunker(hexToBytes(session.clientSk), session.bunker, { pool: this.pool })
    return this.useSigner(signer, session)
  }

  async useSigner(signer, session) {
    this.signer = signer
    this.me = await withTimeout(signer.getPublicKey(), ANSWER_TIMEOUT_MS, 'signer')
    this.listen()
    return { ...session, me: this.me }
  }

  /** Gift wraps to the agent: only the unseen ones are opened (each costs the signer two decryptions). */
  listen() {
    // Wraps are backdated up to two days (NIP-59), so "since" reaches back that far from
    // the last time this device listened; on a first login only new ones.
    const last = Number(localStorage.getItem(seenKey('at')) || 0)
    const filter = { kinds: [1059], '#p': [this.me] }
    if (last) filter.since = last - 2 * 86400
    else filter.limit = 0
    this.sub = this.pool.subscribe([this.relay], filter, {
      onevent: (wrap) => this.open(wrap),
    })
  }

  async open(wrap) {
    if (this.seen.has(wrap.id)) return
    this.remember(wrap.id)
    let message
    try {
      const sealJson = await withTimeout(this.signer.nip44Decrypt(wrap.pubkey, wrap.content), ANSWER_TIMEOUT_MS, 'signer')
      const seal = JSON.parse(sealJson)
      if (seal.kind !== 13 || !verifyEvent(seal) || seal.pubkey !== this.bot) return
      const rumor = JSON.parse(await withTimeout(this.signer.nip44Decrypt(seal.pubkey, seal.content), ANSWER_TIMEOUT_MS, 'signer'))
      if (rumor.pubkey !== seal.pubkey || rumor.kind !== 14) return
      message = JSON.parse(rumor.content)
    } catch {
      return
    }
    const waiter = message && message.re && this.waiting.get(message.re)
    if (waiter) {
      this.waiting.delete(message.re)
      waiter(message)
    } else if (message && message.notice) {
      this.onMessage(message)
    }
  }

  remember(id) {
    this.seen.add(id)
    const ids = [...this.seen].slice(-2000)
    this.seen = new Set(ids)
    try {
      localStorage.setItem(seenKey('ids'), JSON.stringify(ids))
      localStorage.setItem(seenKey('at'), String(Math.floor(Date.now() / 1000)))
    } catch {
      // storage full or denied: the worst is opening a wrap twice
    }
  }

  /** A NIP-17 DM to soko's bot: the rumor sealed by the signer, wrapped by a throwaway key. */
  async sendDm(content) {
    const now = Math.floor(Date.now() / 1000)
    const rumor = { pubkey: this.me, created_at: now, kind: 14, tags: [['p', this.bot]], content }
    rumor.id = getEventHash(rumor)
    const sealed = await withTimeout(this.signer.nip44Encrypt(this.bot, JSON.stringify(rumor)), ANSWER_TIMEOUT_MS, 'signer')
    const seal = await withTimeout(
      this.signer.signEvent({ kind: 13, pubkey: this.me, created_at: now, tags: [], content: sealed }),
      ANSWER_TIMEOUT_MS,
      'signer',
    )
    const wrap = createWrap(seal, this.bot)
    await withTimeout(Promise.any(this.pool.publish([this.relay], wrap)), 15_000, 'relay')
  }

  /** Sends one command and resolves with soko's answer envelope. */
  async ask(cmd, args = {}) {
    const id = `${cmd.slice(0, 20)}-${bytesToHex(generateSecretKey()).slice(0, 12)}`
    const answer = new Promise((resolve) => this.waiting.set(id, resolve))
    try {
      await this.sendDm(JSON.stringify({ v: 1, id, cmd, args }))
      return await withTimeout(answer, ANSWER_TIMEOUT_MS, 'soko')
    } finally {
      this.waiting.delete(id)
    }
  }

  /** The registration event, signed by the signer (kinds/agents.md). */
  async signRegistration(code, name) {
    const tags = [['invite', code], ['role', 'agent']]
    if (name) tags.push(['name', name])
    tags.push(['p', this.bot])
    return withTimeout(
      this.signer.signEvent({ kind: REGISTRATION_KIND, pubkey: this.me, created_at: Math.floor(Date.now() / 1000), tags, content: '' }),
      ANSWER_TIMEOUT_MS,
      'signer',
    )
  }

  /** A merchant's published stalls and products (kind 30017/30018 under its key). */
  async listings(merchantHex) {
    const events = await this.pool.querySync([this.relay], { kinds: [30017, 30018], authors: [merchantHex] }, { maxWait: 6000 })
    const latest = new Map()
    for (const e of events) {
      const d = (e.tags.find((t) => t[0] === 'd') || [])[1]
      if (d === undefined) continue
      const key = `${e.kind}:${d}`
      if (!latest.has(key) || latest.get(key).created_at < e.created_at) latest.set(key, e)
    }
    const stalls = []
    const products = []
    for (const e of latest.values()) {
      let content
      try {
        content = JSON.parse(e.content)
      } catch {
        continue
      }
      if (e.kind === 30017) stalls.push({ ...content, event_id: e.id })
      // A product's categories are its `t` tags, not part of its content (NIP-15).
      else products.push({ ...content, categories: e.tags.filter((t) => t[0] === 't' && t[1]).map((t) => t[1]), event_id: e.id })
    }
    return { stalls, products }
  }
}

function normal(url) {
  // The pool keys relays by their normalised URL (a trailing slash added to a bare host).
  try {
    const u = new URL(url)
    if (u.pathname === '') u.pathname = '/'
    return u.toString()
  } catch {
    return url
  }
}

function seenKey(what) {
  return `soko-agent-seen-${what}`
}

function loadSeen() {
  try {
    return new Set(JSON.parse(localStorage.getItem(seenKey('ids')) || '[]'))
  } catch {
    return new Set()
  }
}
