// trackd link tokens, version 2 (AES-SIV) and version 1 (HMAC), written from docs/tokens.md
// alone with Node 20's built-in crypto: a second implementation that proves a sender in another
// language can mint tokens from the document. No npm packages.
//
// Usage
//   node tests/node/tokens.mjs --self-test   RFC 4493 (AES-CMAC) and RFC 5297 A.1 (AES-SIV)
//                                            examples; exits 1 on any mismatch.
//   node tests/node/tokens.mjs < requests.json > results.json
//                                            ONE JSON array of requests in, ONE JSON array of
//                                            results out (same length, same order).
//
// Requests (kind is "open" or "click"; bytes are lowercase or uppercase hex strings):
//   {"op": "mint",    "key": "kid:secret", "kind": K, "fields": F}   -> {"token": "..."}
//   {"op": "mint_v1", "key": "kid:secret", "kind": K, "fields": F}   -> {"token": "..."}
//   {"op": "open",    "keys": ["kid:secret", ...], "kind": K, "token": "..."}
//        -> {"version": 1|2, "kind": K, "kid": "...", "fields": F}
//   {"op": "seal",    "key": "kid:secret", "kind": K, "plaintext": hex}  -> {"token": "..."}
//        any plaintext (no field checks) under a version 2 header: for tokens that must be refused
//   {"op": "seal_v1", "key": "kid:secret", "payload": hex}           -> {"token": "..."}
//        any version 1 payload (its first bytes included), with its HMAC tag appended
//   {"op": "derive",  "secret": "..."}                            -> {"key": hex (64 bytes)}
//   {"op": "cmac",    "key": hex (16/24/32), "message": hex}      -> {"mac": hex}
//   {"op": "siv_encrypt", "key": hex (32/48/64), "ad": [hex, ...], "plaintext": hex}
//        -> {"output": hex (siv || ciphertext)}
//   {"op": "siv_decrypt", "key": hex (32/48/64), "ad": [hex, ...], "ciphertext": hex (siv || c)}
//        -> {"plaintext": hex}
// Any request that fails answers {"error": "reason"} in its place (a bad token, bad fields, a
// bad key spec, an unknown op); the process still answers every other request.
//
// Fields F (what mint takes and open gives back; open always gives every key):
//   {"sent_at": 0..2^32-1 (mint: omitted or null means now), "link_index": 0..65535 | null,
//    "campaign_id": str, "recipient_id": str, "url": str | null, "link_name": str | null,
//    "message_id": str | null, "part": "api" | "html" | "text" | null (opens), "honeypot": bool}
// An open has link_index, url, link_name and part null and honeypot false (its flag bits 0-3
// are 0); a version 1 click has link_name and message_id null, part "api" and honeypot false
// (docs/tokens.md, "Version 1").

import { Buffer } from "node:buffer";
import crypto from "node:crypto";
import process from "node:process";
import { fileURLToPath } from "node:url";

// --- AES-CMAC (RFC 4493) ----------------------------------------------------------------------

const BLOCK = 16;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

function aesName(key, mode) {
  if (![16, 24, 32].includes(key.length)) throw new Error(`AES key of ${key.length} bytes`);
  return `aes-${key.length * 8}-${mode}`;
}

function aesBlock(key, block) {
  const cipher = crypto.createCipheriv(aesName(key, "ecb"), key, null);
  cipher.setAutoPadding(false);
  return Buffer.concat([cipher.update(block), cipher.final()]);
}

// dbl (RFC 5297 2.3; RFC 4493's subkey step): shift left one bit, xor 0x87 into the last byte
// when the bit shifted out was 1.
export function dbl(block) {
  const out = Buffer.alloc(BLOCK);
  for (let i = 0; i < BLOCK; i++) out[i] = ((block[i] << 1) & 0xff) | (i + 1 < BLOCK ? block[i + 1] >> 7 : 0);
  if (block[0] & 0x80) out[BLOCK - 1] ^= 0x87;
  return out;
}

function xor(a, b) {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i];
  return out;
}

export function cmacSubkeys(key) {
  const k1 = dbl(aesBlock(key, ZERO_BLOCK));
  return [k1, dbl(k1)];
}

export function cmac(key, message) {
  const [k1, k2] = cmacSubkeys(key);
  const n = Math.max(1, Math.ceil(message.length / BLOCK));
  const complete = message.length > 0 && message.length % BLOCK === 0;
  const last = Buffer.alloc(BLOCK);
  message.copy(last, 0, (n - 1) * BLOCK);
  let mLast;
  if (complete) {
    mLast = xor(last, k1);
  } else {
    last[message.length - (n - 1) * BLOCK] = 0x80; // padding: 10^i
    mLast = xor(last, k2);
  }
  // CBC-MAC with a zero IV: the MAC is the last ciphertext block.
  const cipher = crypto.createCipheriv(aesName(key, "cbc"), key, ZERO_BLOCK);
  cipher.setAutoPadding(false);
  const out = Buffer.concat([cipher.update(message.subarray(0, (n - 1) * BLOCK)), cipher.update(mLast), cipher.final()]);
  return out.subarray(out.length - BLOCK);
}

// --- AES-SIV (RFC 5297) -----------------------------------------------------------------------

// S2V (RFC 5297 2.4) over the strings [S1, ..., Sn]: with AES-SIV, the associated-data
// components and then the plaintext as Sn.
export function s2v(key, strings) {
  if (strings.length === 0) return cmac(key, Buffer.concat([Buffer.alloc(BLOCK - 1), Buffer.from([1])]));
  let d = cmac(key, ZERO_BLOCK);
  for (const s of strings.slice(0, -1)) d = xor(dbl(d), cmac(key, s));
  const sn = strings[strings.length - 1];
  let t;
  if (sn.length >= BLOCK) {
    t = Buffer.from(sn); // Sn xorend D: xor D into the last 16 bytes
    xor(sn.subarray(sn.length - BLOCK), d).copy(t, sn.length - BLOCK);
  } else {
    const padded = Buffer.alloc(BLOCK);
    sn.copy(padded);
    padded[sn.length] = 0x80;
    t = xor(dbl(d), padded);
  }
  return cmac(key, t);
}

function splitSivKey(key) {
  if (![32, 48, 64].includes(key.length)) throw new Error(`AES-SIV key of ${key.length} bytes`);
  return [key.subarray(0, key.length / 2), key.subarray(key.length / 2)];
}

// The CTR counter: the SIV with the 31st and 63rd bits (from the right) cleared (RFC 5297 2.5/2.6:
// Q = V bitand (1^64 || 0^1 || 1^31 || 0^1 || 1^31)). OpenSSL's CTR increments all 128 bits,
// which the cleared bits make the same as RFC 5297's for any message we can hold.
function ctr(k2, v, data) {
  const q = Buffer.from(v);
  q[8] &= 0x7f;
  q[12] &= 0x7f;
  const cipher = crypto.createCipheriv(aesName(k2, "ctr"), k2, q);
  return Buffer.concat([cipher.update(data), cipher.final()]);
}

const MAX_AD_COMPONENTS = 126; // RFC 5297 2.6: S2V takes at most 127 strings, the plaintext one

export function sivEncrypt(key, ad, plaintext) {
  const [k1, k2] = splitSivKey(key);
  if (ad.length > MAX_AD_COMPONENTS) throw new Error("too many associated-data components");
  const v = s2v(k1, [...ad, plaintext]);
  return Buffer.concat([v, ctr(k2, v, plaintext)]);
}

// The plaintext, or null when the SIV does not match (or the input is shorter than an SIV).
export function sivDecrypt(key, ad, input) {
  const [k1, k2] = splitSivKey(key);
  if (ad.length > MAX_AD_COMPONENTS) throw new Error("too many associated-data components");
  if (input.length < BLOCK) return null;
  const v = input.subarray(0, BLOCK);
  const plaintext = ctr(k2, v, input.subarray(BLOCK));
  const t = s2v(k1, [...ad, plaintext]);
  return crypto.timingSafeEqual(t, v) ? plaintext : null;
}

// --- keys ---------------------------------------------------------------------------------------

const KID = /^[A-Za-z0-9_.-]{1,32}$/;
const MIN_SECRET_CHARS = 16;
const HKDF_INFO = Buffer.from("trackd token v2 AES-SIV", "ascii");

export function deriveSivKey(secret) {
  // salt "none" is HashLen (32) zero bytes, RFC 5869 2.2.
  return Buffer.from(crypto.hkdfSync("sha256", Buffer.from(secret, "utf8"), Buffer.alloc(32), HKDF_INFO, 64));
}

// "kid:secret": the kid cannot hold ':', so the first ':' ends it and the secret is the rest.
export function parseKey(spec) {
  if (typeof spec !== "string") throw new Error("key spec is not a string");
  const colon = spec.indexOf(":");
  if (colon < 0) throw new Error("key spec has no ':'");
  const kid = spec.slice(0, colon);
  const secret = spec.slice(colon + 1);
  if (!KID.test(kid)) throw new Error(`bad kid ${JSON.stringify(kid)}`);
  if (!secret.isWellFormed()) throw new Error("secret is not well-formed Unicode");
  if ([...secret].length < MIN_SECRET_CHARS) throw new Error(`secret of kid ${kid} is shorter than 16 characters`);
  return {
    kid,
    kidBytes: Buffer.from(kid, "ascii"),
    secret: Buffer.from(secret, "utf8"),
    sivKey: deriveSivKey(secret),
  };
}

export function parseKeys(specs) {
  if (!Array.isArray(specs) || specs.length === 0) throw new Error("no keys");
  const keys = specs.map(parseKey);
  const kids = new Set(keys.map((k) => k.kid));
  if (kids.size !== keys.length) throw new Error("kids are not unique");
  return keys;
}

// --- fields -------------------------------------------------------------------------------------

const KINDS = { open: 0, click: 1 };
const KIND_NAMES = ["open", "click"];
const PARTS = ["api", "html", "text"];
const MIN_TOKEN_CHARS = 24;
const MAX_TOKEN_CHARS = 16_384;
const MAX_URL_CHARS = 2_048;
const TAG = 16;

class BadFields extends Error {}

function kindNumber(kind) {
  if (!Object.hasOwn(KINDS, kind)) throw new BadFields(`kind ${JSON.stringify(kind)} is not "open" or "click"`);
  return KINDS[kind];
}

function idBytes(name, value, max, optional = false) {
  if (optional && (value === undefined || value === null)) return null;
  if (typeof value !== "string") throw new BadFields(`${name} is not a string`);
  if (!value.isWellFormed()) throw new BadFields(`${name} is not well-formed Unicode`);
  if (value.includes("\0")) throw new BadFields(`${name} holds NUL`);
  const raw = Buffer.from(value, "utf8"); // as given: no Unicode normalization
  if (raw.length < 1 || raw.length > max) throw new BadFields(`${name} is ${raw.length} bytes, not 1 to ${max}`);
  return raw;
}

function integer(name, value, max) {
  if (!Number.isInteger(value) || value < 0 || value > max) throw new BadFields(`${name} is not an integer 0 to ${max}`);
  return value;
}

function sentAt(fields) {
  const value = fields.sent_at ?? Math.floor(Date.now() / 1000);
  return integer("sent_at", value, 0xffff_ffff);
}

function isPrintableAscii(raw) {
  return raw.length > 0 && raw.every((b) => b >= 0x21 && b <= 0x7e);
}

function urlBytes(url) {
  if (typeof url !== "string") throw new BadFields("url is not a string");
  const raw = Buffer.from(url, "utf8");
  if (!isPrintableAscii(raw)) throw new BadFields("url is not printable ASCII (0x21 to 0x7e)");
  if (raw.length > MAX_URL_CHARS) throw new BadFields(`url is ${raw.length} characters, more than ${MAX_URL_CHARS}`);
  if (!/^https?:\/\/./i.test(url)) throw new BadFields("url is not an absolute http or https URL");
  return raw;
}

function mustBeAbsent(fields, names, why) {
  for (const name of names) {
    const value = fields[name];
    const absent = value === undefined || value === null || (name === "part" && value === "api") || (name === "honeypot" && value === false);
    if (!absent) throw new BadFields(`${why} has no ${name}`);
  }
}

function u8(n) {
  return Buffer.from([n]);
}

function u16(n) {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u32(n) {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function withLength(raw) {
  return Buffer.concat([u8(raw.length), raw]);
}

function finishToken(raw) {
  const token = raw.toString("base64url"); // RFC 4648 section 5, no padding
  if (token.length > MAX_TOKEN_CHARS) throw new BadFields(`token would be ${token.length} characters`);
  return token;
}

// --- version 2 ----------------------------------------------------------------------------------

export function mint(keySpec, kind, fields) {
  const key = parseKey(keySpec);
  const k = kindNumber(kind);
  const parts = [u32(sentAt(fields))];
  let flags = 0;
  const campaign = idBytes("campaign_id", fields.campaign_id, 255);
  const recipient = idBytes("recipient_id", fields.recipient_id, 255);
  const message = idBytes("message_id", fields.message_id, 255, true);
  let name = null;
  let url = null;
  if (k === KINDS.click) {
    parts.push(u16(integer("link_index", fields.link_index, 0xffff)));
    const part = fields.part ?? "api";
    if (!PARTS.includes(part)) throw new BadFields(`part ${JSON.stringify(part)} is not api, html or text`);
    flags |= PARTS.indexOf(part);
    const honeypot = fields.honeypot ?? false;
    if (typeof honeypot !== "boolean") throw new BadFields("honeypot is not a boolean");
    if (honeypot) flags |= 1 << 2;
    name = idBytes("link_name", fields.link_name, 64, true);
    if (name !== null) flags |= 1 << 3;
    url = urlBytes(fields.url);
  } else {
    mustBeAbsent(fields, ["link_index", "url", "link_name", "part", "honeypot"], "an open");
  }
  if (message !== null) flags |= 1 << 4;
  parts.push(u8(flags), withLength(campaign), withLength(recipient));
  if (name !== null) parts.push(withLength(name));
  if (message !== null) parts.push(withLength(message));
  if (url !== null) parts.push(url);
  const header = Buffer.concat([u8(0x20 | k), withLength(key.kidBytes)]);
  return finishToken(Buffer.concat([header, sivEncrypt(key.sivKey, [header], Buffer.concat(parts))]));
}

// Any plaintext, sealed as a version 2 token of this kind: what a sender could make with the key.
export function seal(keySpec, kind, plaintext) {
  const key = parseKey(keySpec);
  const header = Buffer.concat([u8(0x20 | kindNumber(kind)), withLength(key.kidBytes)]);
  return Buffer.concat([header, sivEncrypt(key.sivKey, [header], plaintext)]).toString("base64url");
}

// --- version 1 (read only in trackd; minted here for the vectors) -------------------------------

export function sealV1(keySpec, payload) {
  const key = parseKey(keySpec);
  return Buffer.concat([payload, v1Tag(key.secret, payload)]).toString("base64url");
}

export function mintV1(keySpec, kind, fields) {
  const key = parseKey(keySpec);
  const k = kindNumber(kind);
  mustBeAbsent(fields, ["link_name", "message_id", "part", "honeypot"], "a version 1 token");
  const parts = [u8(0x01), u8(k), withLength(key.kidBytes), u32(sentAt(fields))];
  if (k === KINDS.click) parts.push(u16(integer("link_index", fields.link_index, 0xffff)));
  else mustBeAbsent(fields, ["link_index", "url"], "an open");
  parts.push(withLength(idBytes("campaign_id", fields.campaign_id, 255)));
  parts.push(withLength(idBytes("recipient_id", fields.recipient_id, 255)));
  if (k === KINDS.click) parts.push(urlBytes(fields.url));
  const payload = Buffer.concat(parts);
  return finishToken(Buffer.concat([payload, v1Tag(key.secret, payload)]));
}

function v1Tag(secret, payload) {
  return crypto.createHmac("sha256", secret).update(payload).digest().subarray(0, TAG);
}

// --- opening (docs/tokens.md, "Opening a token") ------------------------------------------------

class BadToken extends Error {}

const B64URL = /^[A-Za-z0-9_-]*$/;
const B64_VALUE = (c) => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".indexOf(c);

// Step 1: the one spelling of the bytes.
function decodeCanonical(token) {
  if (typeof token !== "string") throw new BadToken("token is not a string");
  if (token.length < MIN_TOKEN_CHARS || token.length > MAX_TOKEN_CHARS) throw new BadToken("length");
  if (!B64URL.test(token)) throw new BadToken("alphabet");
  const rest = token.length % 4;
  if (rest === 1) throw new BadToken("length is 1 more than a multiple of 4");
  const last = B64_VALUE(token[token.length - 1]);
  if ((rest === 2 && (last & 0x0f) !== 0) || (rest === 3 && (last & 0x03) !== 0)) throw new BadToken("unused bits");
  const raw = Buffer.from(token, "base64url");
  if (raw.toString("base64url") !== token) throw new BadToken("not canonical"); // cannot happen after the checks
  return raw;
}

// A reader over the plaintext (or a version 1 payload) that refuses to run past its end.
class Reader {
  constructor(buf) {
    this.buf = buf;
    this.pos = 0;
  }
  take(n, what) {
    if (this.pos + n > this.buf.length) throw new BadToken(`${what} runs past the end`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  u8(what) {
    return this.take(1, what)[0];
  }
  u16(what) {
    return this.take(2, what).readUInt16BE();
  }
  u32(what) {
    return this.take(4, what).readUInt32BE();
  }
  rest() {
    const out = this.buf.subarray(this.pos);
    this.pos = this.buf.length;
    return out;
  }
  get left() {
    return this.buf.length - this.pos;
  }
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function readId(reader, name, max) {
  const len = reader.u8(`${name} length`);
  if (len < 1 || len > max) throw new BadToken(`${name} length ${len} is not 1 to ${max}`);
  const raw = reader.take(len, name);
  let value;
  try {
    value = UTF8.decode(raw);
  } catch {
    throw new BadToken(`${name} is not UTF-8`);
  }
  if (value.includes("\0")) throw new BadToken(`${name} holds NUL`);
  return value;
}

function readUrl(reader) {
  const raw = reader.rest();
  if (!isPrintableAscii(raw)) throw new BadToken("url is empty or not printable ASCII");
  return raw.toString("ascii");
}

function keyOf(keys, kidBytes) {
  return keys.find((k) => k.kidBytes.equals(kidBytes)) ?? null;
}

function openV2(keys, raw, k) {
  // Step 2: version and kind, then the kid.
  if (raw[0] !== (0x20 | k)) throw new BadToken("version or kind");
  const kidLen = raw[1];
  if (2 + kidLen > raw.length) throw new BadToken("kid runs past the end");
  const header = raw.subarray(0, 2 + kidLen);
  const key = keyOf(keys, header.subarray(2));
  if (key === null) throw new BadToken("unknown kid");
  // Step 3: the SIV.
  const plaintext = sivDecrypt(key.sivKey, [header], raw.subarray(header.length));
  if (plaintext === null) throw new BadToken("SIV does not match");
  // Step 4: the plaintext parses exactly.
  const r = new Reader(plaintext);
  const fields = { sent_at: r.u32("sent_at"), link_index: null };
  if (k === KINDS.click) fields.link_index = r.u16("link_index");
  const flags = r.u8("flags");
  if (flags & 0xe0) throw new BadToken("reserved flag bits");
  if (k === KINDS.open && flags & 0x0f) throw new BadToken("click flags in an open");
  if ((flags & 0x03) === 3) throw new BadToken("part 3");
  fields.campaign_id = readId(r, "campaign", 255);
  fields.recipient_id = readId(r, "recipient", 255);
  fields.link_name = flags & (1 << 3) ? readId(r, "link_name", 64) : null;
  fields.message_id = flags & (1 << 4) ? readId(r, "message_id", 255) : null;
  fields.url = null;
  if (k === KINDS.click) fields.url = readUrl(r);
  else if (r.left !== 0) throw new BadToken("bytes left over in an open");
  fields.part = k === KINDS.click ? PARTS[flags & 0x03] : null; // an open has no part
  fields.honeypot = Boolean(flags & (1 << 2));
  return { version: 2, kind: KIND_NAMES[k], kid: key.kid, fields: ordered(fields) };
}

// Version 1: the spec gives only its layout and tag; the field rules assumed here are version
// 2's (lengths in range and inside the payload, UTF-8 ids without NUL, nothing left over for an
// open, a printable-ASCII url of at least one byte for a click).
function openV1(keys, raw, k) {
  if (raw.length < 3 + TAG) throw new BadToken("too short for version 1");
  const payload = raw.subarray(0, raw.length - TAG);
  const r = new Reader(payload);
  r.u8("version");
  if (r.u8("kind") !== k) throw new BadToken("kind");
  const key = keyOf(keys, r.take(r.u8("kid length"), "kid"));
  if (key === null) throw new BadToken("unknown kid");
  if (!crypto.timingSafeEqual(v1Tag(key.secret, payload), raw.subarray(raw.length - TAG))) throw new BadToken("tag does not match");
  const fields = { sent_at: r.u32("sent_at"), link_index: null };
  if (k === KINDS.click) fields.link_index = r.u16("link_index");
  fields.campaign_id = readId(r, "campaign", 255);
  fields.recipient_id = readId(r, "recipient", 255);
  fields.url = null;
  if (k === KINDS.click) fields.url = readUrl(r);
  else if (r.left !== 0) throw new BadToken("bytes left over in an open");
  Object.assign(fields, { link_name: null, message_id: null, part: k === KINDS.click ? "api" : null, honeypot: false });
  return { version: 1, kind: KIND_NAMES[k], kid: key.kid, fields: ordered(fields) };
}

const FIELD_ORDER = ["sent_at", "link_index", "campaign_id", "recipient_id", "url", "link_name", "message_id", "part", "honeypot"];

function ordered(fields) {
  return Object.fromEntries(FIELD_ORDER.map((name) => [name, fields[name]]));
}

// {version, kind, kid, fields} or {error}. A bad key list (configuration, not the token) throws.
export function open(keySpecs, token, kind) {
  const keys = parseKeys(keySpecs);
  const k = kindNumber(kind);
  try {
    const raw = decodeCanonical(token);
    if (raw[0] === 0x01) return openV1(keys, raw, k);
    return openV2(keys, raw, k);
  } catch (e) {
    if (e instanceof BadToken) return { error: `bad token: ${e.message}` };
    throw e;
  }
}

// --- self-test ----------------------------------------------------------------------------------

const hex = (s) => Buffer.from(s.replace(/\s+/g, ""), "hex");

export function selfTest() {
  const failures = [];
  const check = (name, got, want) => {
    if (!got.equals(want)) failures.push(`${name}: got ${got.toString("hex")}, want ${want.toString("hex")}`);
  };
  // RFC 4493 section 4: subkeys and examples 1 to 4.
  const key = hex("2b7e1516 28aed2a6 abf71588 09cf4f3c");
  const [k1, k2] = cmacSubkeys(key);
  check("RFC 4493 L", aesBlock(key, ZERO_BLOCK), hex("7df76b0c 1ab899b3 3e42f047 b91b546f"));
  check("RFC 4493 K1", k1, hex("fbeed618 35713366 7c85e08f 7236a8de"));
  check("RFC 4493 K2", k2, hex("f7ddac30 6ae266cc f90bc11e e46d513b"));
  const m = hex(
    "6bc1bee2 2e409f96 e93d7e11 7393172a ae2d8a57 1e03ac9c 9eb76fac 45af8e51" +
      "30c81c46 a35ce411 e5fbc119 1a0a52ef f69f2445 df4f9b17 ad2b417b e66c3710",
  );
  check("RFC 4493 example 1", cmac(key, m.subarray(0, 0)), hex("bb1d6929 e9593728 7fa37d12 9b756746"));
  check("RFC 4493 example 2", cmac(key, m.subarray(0, 16)), hex("070a16b4 6b4d4144 f79bdd9d d04a287c"));
  check("RFC 4493 example 3", cmac(key, m.subarray(0, 40)), hex("dfa66747 de9ae630 30ca3261 1497c827"));
  check("RFC 4493 example 4", cmac(key, m), hex("51f0bebf 7e3b9d92 fc497417 79363cfe"));
  // RFC 5297 appendix A.1: deterministic authenticated encryption, AES-SIV with a 32-byte key.
  const sivKey = hex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff");
  const ad = hex("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627");
  const plaintext = hex("11223344 55667788 99aabbcc ddee");
  const output = hex("85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c");
  check("RFC 5297 A.1 CMAC(zero)", cmac(sivKey.subarray(0, 16), ZERO_BLOCK), hex("0e04dfaf c1efbf04 01405828 59bf073a"));
  check("RFC 5297 A.1 S2V", s2v(sivKey.subarray(0, 16), [ad, plaintext]), hex("85632d07 c6e8f37f 950acd32 0a2ecc93"));
  check("RFC 5297 A.1 encrypt", sivEncrypt(sivKey, [ad], plaintext), output);
  check("RFC 5297 A.1 decrypt", sivDecrypt(sivKey, [ad], output) ?? Buffer.from("(refused)"), plaintext);
  const forged = Buffer.from(output);
  forged[forged.length - 1] ^= 1;
  if (sivDecrypt(sivKey, [ad], forged) !== null) failures.push("RFC 5297 A.1: a changed ciphertext decrypts");
  // docs/tokens.md, "Length": 2-character kid, 10-byte campaign, 12-byte recipient, 35-character URL.
  const fields = { sent_at: 1, campaign_id: "c".repeat(10), recipient_id: "r".repeat(12) };
  const click = { ...fields, link_index: 0, url: `https://example.com/${"p".repeat(15)}` };
  const lengths = [
    ["open", mint("k1:0123456789abcdef", "open", fields).length, 66],
    ["click", mint("k1:0123456789abcdef", "click", click).length, 115],
    ["v1 open", mintV1("k1:0123456789abcdef", "open", fields).length, 66],
    ["v1 click", mintV1("k1:0123456789abcdef", "click", click).length, 115],
  ];
  for (const [name, got, want] of lengths) if (got !== want) failures.push(`docs/tokens.md length of a ${name}: ${got}, want ${want}`);
  return failures;
}

// --- CLI ----------------------------------------------------------------------------------------

function answer(request) {
  switch (request.op) {
    case "mint":
      return { token: mint(request.key, request.kind, request.fields ?? {}) };
    case "mint_v1":
      return { token: mintV1(request.key, request.kind, request.fields ?? {}) };
    case "open":
      return open(request.keys, request.token, request.kind);
    case "seal":
      return { token: seal(request.key, request.kind, hex(request.plaintext)) };
    case "seal_v1":
      return { token: sealV1(request.key, hex(request.payload)) };
    case "derive":
      return { key: deriveSivKey(request.secret).toString("hex") };
    case "cmac":
      return { mac: cmac(hex(request.key), hex(request.message)).toString("hex") };
    case "siv_encrypt":
      return { output: sivEncrypt(hex(request.key), request.ad.map(hex), hex(request.plaintext)).toString("hex") };
    case "siv_decrypt": {
      const plaintext = sivDecrypt(hex(request.key), request.ad.map(hex), hex(request.ciphertext));
      return plaintext === null ? { error: "SIV does not match" } : { plaintext: plaintext.toString("hex") };
    }
    default:
      return { error: `unknown op ${JSON.stringify(request.op)}` };
  }
}

// stdin as a stream: readFileSync(0) fails with EAGAIN when the pipe is non-blocking and large.
async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

async function main() {
  if (process.argv.includes("--self-test")) {
    const failures = selfTest();
    for (const f of failures) process.stderr.write(`FAIL ${f}\n`);
    process.stdout.write(failures.length ? `${failures.length} failures\n` : "self-test: RFC 4493, RFC 5297 A.1, lengths ok\n");
    process.exit(failures.length ? 1 : 0);
  }
  const requests = JSON.parse(await readStdin());
  if (!Array.isArray(requests)) throw new Error("stdin is not a JSON array");
  const results = requests.map((request) => {
    try {
      return answer(request);
    } catch (e) {
      return { error: String(e?.message ?? e) };
    }
  });
  process.stdout.write(JSON.stringify(results));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
