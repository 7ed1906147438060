// gxconf credential test harness: an independent issuer, status-list host,
// did:web host and wallet built from npm packages (@digitalbazaar/vc with its
// Ed25519Signature2018/2020 and Data Integrity suites, @sd-jwt/sd-jwt-vc,
// jose, jsonld). gxconf's Go tests start it as a
// subprocess and speak line-delimited JSON with it:
//
//   stdout, first line:  {"ready":true,"port":N,"base":"https://127.0.0.1:N",...identities}
//   stdin:               {"id":1,"cmd":"issue",...}
//   stdout:              {"id":1,"ok":true,"result":...} or {"id":1,"ok":false,"error":"..."}
//
// It serves HTTPS on 127.0.0.1 with the certificate from HARNESS_TLS_CERT /
// HARNESS_TLS_KEY; start Node with NODE_EXTRA_CA_CERTS pointing at the same
// certificate so that the wallet trusts gxconf's test server.
// JSON-LD contexts come from the pinned npm context packages only; nothing
// is fetched from the network.

import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import readline from 'node:readline';
import zlib from 'node:zlib';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

import * as vc from '@digitalbazaar/vc';
import {Ed25519VerificationKey2020} from '@digitalbazaar/ed25519-verification-key-2020';
import {Ed25519Signature2020} from '@digitalbazaar/ed25519-signature-2020';
import {Ed25519VerificationKey2018} from '@digitalbazaar/ed25519-verification-key-2018';
import {Ed25519Signature2018} from '@digitalbazaar/ed25519-signature-2018';
import {DataIntegrityProof} from '@digitalbazaar/data-integrity';
import {cryptosuite as eddsaRdfc2022} from '@digitalbazaar/eddsa-rdfc-2022-cryptosuite';
import {cryptosuite as ecdsaRdfc2019} from '@digitalbazaar/ecdsa-rdfc-2019-cryptosuite';
import * as Ed25519Multikey from '@digitalbazaar/ed25519-multikey';
import * as EcdsaMultikey from '@digitalbazaar/ecdsa-multikey';
import * as diContext from '@digitalbazaar/data-integrity-context';
import * as bsl from '@digitalbazaar/vc-bitstring-status-list';
import * as sl2021 from '@digitalbazaar/vc-status-list';
import {contexts as credContexts} from '@digitalbazaar/credentials-context';
import * as edContext from 'ed25519-signature-2020-context';
import * as bslContext from '@digitalbazaar/vc-bitstring-status-list-context';
import * as slContext from '@digitalbazaar/vc-status-list-context';
import jsonld from 'jsonld';
import * as jose from 'jose';
import {createVerifiableCredentialJwt, createVerifiablePresentationJwt} from 'did-jwt-vc';
import {EdDSASigner} from 'did-jwt';
import {Openid4vpClient} from '@openid4vc/openid4vp';
import {SDJwtVcInstance} from '@sd-jwt/sd-jwt-vc';
import {digest, generateSalt} from '@sd-jwt/crypto-nodejs';
import {StatusList, createHeaderAndPayload} from '@sd-jwt/jwt-status-list';

const here = path.dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------- contexts
const CRED_V1 = 'https://www.w3.org/2018/credentials/v1';
const CRED_V2 = 'https://www.w3.org/ns/credentials/v2';
const ED_CTX = edContext.constants.CONTEXT_URL;
const JWS_CTX = 'https://w3id.org/security/suites/jws-2020/v1';
const DI_CTX = diContext.DATA_INTEGRITY_CONTEXT_V2_URL;
const SL_CTX = slContext.constants.CONTEXT_URL_V1;
const BSL_CTX = bslContext.constants.CONTEXT_URL;
// A context gxconf has not pinned; the harness knows it so that it can sign
// a credential using it (the "unknown JSON-LD context" negative case).
const UNKNOWN_CTX = 'https://contexts.gxconf.test/unknown/v1';
// Claims vocabulary of the test credentials: the W3C context that maps
// undefined terms into https://www.w3.org/ns/credentials/undefined-term#.
const UNDEF_CTX = 'https://www.w3.org/ns/credentials/undefined-terms/v2';
// The same as an inline context (gxconf refuses inline contexts; the
// "inlineVocab" issue option signs such a credential for the negative case).
const INLINE_VOCAB = {'@vocab': 'https://vocab.gxconf.test/#'};

const contexts = new Map();
for(const [url, doc] of credContexts) contexts.set(url, doc);
contexts.set(ED_CTX, edContext.contexts.get(ED_CTX));
contexts.set(DI_CTX, diContext.contexts.get(DI_CTX));
contexts.set(SL_CTX, slContext.contexts.get(SL_CTX));
contexts.set(BSL_CTX, bslContext.contexts.get(BSL_CTX));
contexts.set(JWS_CTX, JSON.parse(fs.readFileSync(
  path.join(here, '../../credentials/contexts/jws-2020-v1.jsonld'), 'utf8')));
contexts.set(UNKNOWN_CTX, {'@context': {'unknownTerm': 'https://contexts.gxconf.test/unknown#term'}});

async function documentLoader(url) {
  const doc = contexts.get(url);
  if(doc === undefined) throw new Error(`harness: refusing to load ${url}`);
  return {contextUrl: null, documentUrl: url, document: structuredClone(doc)};
}

// ---------------------------------------------------------------- helpers
const b64u = b => Buffer.from(b).toString('base64url');
const sha256 = data => crypto.createHash('sha256').update(data).digest();
const nowSec = () => Math.floor(Date.now() / 1000);
const iso = d => new Date(d).toISOString().replace(/\.\d{3}Z$/, 'Z');

function rawSigner(keyObject, alg) {
  return async data => {
    const input = Buffer.from(data);
    const sig = alg === 'EdDSA'
      ? crypto.sign(null, input, keyObject)
      : crypto.sign('sha256', input, {key: keyObject, dsaEncoding: 'ieee-p1363'});
    return b64u(sig);
  };
}

async function signJWT(header, payload, keyObject) {
  const h = b64u(JSON.stringify(header));
  const p = b64u(JSON.stringify(payload));
  const s = await rawSigner(keyObject, header.alg)(`${h}.${p}`);
  return `${h}.${p}.${s}`;
}

// ---------------------------------------------------------------- identities
async function edDidKey() {
  const key = await Ed25519VerificationKey2020.generate();
  const did = `did:key:${key.fingerprint()}`;
  key.controller = did;
  key.id = `${did}#${key.fingerprint()}`;
  // The same key as a Node KeyObject for JOSE signatures (jwt_vp_json, KB-JWT).
  const pub = multibaseToRaw(key.publicKeyMultibase);
  const priv = multibaseToRaw(key.privateKeyMultibase).subarray(0, 32);
  const privateKey = crypto.createPrivateKey({key: {kty: 'OKP', crv: 'Ed25519', d: b64u(priv), x: b64u(pub)}, format: 'jwk'});
  return {did, key, kid: key.id, privateKey, seed: priv, publicJwk: {kty: 'OKP', crv: 'Ed25519', x: b64u(pub)}};
}

// base58btc multibase (Ed25519 multikey: 0xed01 + 32 bytes; private 0x8026 + 64 bytes).
function multibaseToRaw(mb) {
  const alphabet = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
  let n = 0n;
  for(const c of mb.slice(1)) n = n * 58n + BigInt(alphabet.indexOf(c));
  let hex = n.toString(16);
  if(hex.length % 2) hex = '0' + hex;
  const bytes = Buffer.from(hex, 'hex');
  return bytes.subarray(2);
}

// did:key issuers for the other Linked Data proof suites: an
// Ed25519VerificationKey2018 key (Ed25519Signature2018) and Multikeys
// (DataIntegrityProof: Ed25519 with eddsa-rdfc-2022, P-256 and P-384 with
// ecdsa-rdfc-2019). suite says how ldpIssue signs for the issuer.
async function ed2018DidKey() {
  const key = await Ed25519VerificationKey2018.generate();
  const did = `did:key:${key.fingerprint()}`;
  key.controller = did;
  key.id = `${did}#${key.fingerprint()}`;
  return {did, key, kid: key.id, suite: 'Ed25519Signature2018'};
}

async function multikeyDidKey(lib, cryptosuite, opts) {
  const key = await lib.generate(opts);
  const did = `did:key:${key.publicKeyMultibase}`;
  key.controller = did;
  key.id = `${did}#${key.publicKeyMultibase}`;
  return {did, key, kid: key.id, suite: 'DataIntegrityProof', cryptosuite};
}

function p256Key() {
  const {privateKey, publicKey} = crypto.generateKeyPairSync('ec', {namedCurve: 'P-256'});
  return {privateKey, publicJwk: publicKey.export({format: 'jwk'})};
}

// ---------------------------------------------------------------- state
const tlsCert = process.env.HARNESS_TLS_CERT;
const tlsKey = process.env.HARNESS_TLS_KEY;
if(!tlsCert || !tlsKey) {
  process.stderr.write('harness: HARNESS_TLS_CERT and HARNESS_TLS_KEY are required\n');
  process.exit(2);
}

const server = https.createServer({cert: fs.readFileSync(tlsCert), key: fs.readFileSync(tlsKey)}, serve);
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
const port = server.address().port;
const base = `https://127.0.0.1:${port}`;
const webHost = `127.0.0.1%3A${port}`;

const issuers = {
  w3c: await edDidKey(),        // ldp_vc, Bitstring/StatusList2021 (W3C bit order)
  xfsc: await edDidKey(),       // ldp_vc, XFSC-style StatusList2021 (LSB first, std base64)
  untrusted: await edDidKey(),  // not in gxconf's trust registry
  ed2018: await ed2018DidKey(),                                            // Ed25519Signature2018
  eddsa: await multikeyDidKey(Ed25519Multikey, eddsaRdfc2022),             // DataIntegrityProof eddsa-rdfc-2022
  p256: await multikeyDidKey(EcdsaMultikey, ecdsaRdfc2019, {curve: 'P-256'}), // DataIntegrityProof ecdsa-rdfc-2019
  p384: await multikeyDidKey(EcdsaMultikey, ecdsaRdfc2019, {curve: 'P-384'}),
};
// did:web issuer with a P-256 key for VC-JWT, SD-JWT VC and JsonWebSignature2020.
const webKey = p256Key();
const webDid = `did:web:${webHost}:issuers:web`;
issuers.web = {did: webDid, kid: `${webDid}#key-1`, privateKey: webKey.privateKey, publicJwk: webKey.publicJwk};
const webDoc = {
  '@context': ['https://www.w3.org/ns/did/v1', JWS_CTX],
  id: webDid,
  verificationMethod: [{id: `${webDid}#key-1`, type: 'JsonWebKey2020', controller: webDid, publicKeyJwk: webKey.publicJwk}],
  assertionMethod: [`${webDid}#key-1`],
  authentication: [`${webDid}#key-1`],
};
const holder = await edDidKey();

// Status lists: name -> {issuer, kind, length, revoked:Set, credential}
const lists = new Map();
// IETF Token Status Lists (SD-JWT VC): name -> Status List Token (JWT)
const tokenLists = new Map();

// ---------------------------------------------------------------- HTTP
function serve(req, res) {
  const url = new URL(req.url, base);
  if(url.pathname === '/issuers/web/did.json') {
    res.writeHead(200, {'content-type': 'application/did+json'});
    res.end(JSON.stringify(webDoc));
    return;
  }
  const t = url.pathname.match(/^\/tokenstatus\/([\w-]+)$/);
  if(t && tokenLists.has(t[1])) {
    res.writeHead(200, {'content-type': 'application/statuslist+jwt'});
    res.end(tokenLists.get(t[1]));
    return;
  }
  const m = url.pathname.match(/^\/status\/([\w-]+)$/);
  if(m && lists.has(m[1])) {
    res.writeHead(200, {'content-type': 'application/vc+ld+json'});
    res.end(JSON.stringify(lists.get(m[1]).credential));
    return;
  }
  res.writeHead(404);
  res.end();
}

// ---------------------------------------------------------------- issuing
// proofExtra holds further proof options (e.g. {expires}); the suites sign them.
function suiteFor(issuer, proofExtra) {
  if(issuer.suite === 'DataIntegrityProof') {
    if(proofExtra) throw new Error('harness: no proof options for DataIntegrityProof');
    return new DataIntegrityProof({signer: issuer.key.signer(), cryptosuite: issuer.cryptosuite});
  }
  const proof = proofExtra ? {proof: {...proofExtra}} : {};
  if(issuer.suite === 'Ed25519Signature2018') return new Ed25519Signature2018({key: issuer.key, ...proof});
  return new Ed25519Signature2020({key: issuer.key, ...proof});
}

// suiteContexts are the contexts a VC 1.1 document signed for issuer needs
// for its proof's terms (the VC 1.1 context defines Ed25519Signature2018,
// the VC 2.0 one DataIntegrityProof).
function suiteContexts(issuer) {
  switch(issuer.suite) {
  case 'DataIntegrityProof': return [DI_CTX];
  case 'Ed25519Signature2018': return [];
  }
  return [ED_CTX];
}

async function ldpIssue(credential, issuerName, proofExtra) {
  const issuer = issuers[issuerName];
  if(issuerName === 'web') return jws2020Sign(credential, issuer, 'assertionMethod', proofExtra);
  return vc.issue({credential, suite: suiteFor(issuer, proofExtra), documentLoader});
}

// JsonWebSignature2020 (W3C CCG LD-Proof, detached JWS with b64=false) signed
// with jose over jsonld's URDNA2015 output.
async function jws2020Sign(doc, issuer, proofPurpose, extra = {}) {
  const document = structuredClone(doc);
  if(!document['@context'].includes(JWS_CTX)) document['@context'].push(JWS_CTX);
  const proof = {type: 'JsonWebSignature2020', created: iso(Date.now()), verificationMethod: issuer.kid, proofPurpose, ...extra};
  const opts = {algorithm: 'URDNA2015', format: 'application/n-quads', documentLoader, safe: true};
  const c14nProof = await jsonld.canonize({...proof, '@context': document['@context']}, opts);
  const c14nDoc = await jsonld.canonize(document, opts);
  const verifyData = Buffer.concat([sha256(c14nProof), sha256(c14nDoc)]);
  const jws = await new jose.FlattenedSign(verifyData)
    .setProtectedHeader({alg: 'ES256', b64: false, crit: ['b64']})
    .sign(issuer.privateKey);
  return {...document, proof: {...proof, jws: `${jws.protected}..${jws.signature}`}};
}

// list: {name, issuer, kind, revoked, validUntil?, validFrom? (ms since epoch)}
async function makeList({name, issuer, kind, revoked = [], validUntil, validFrom}) {
  const iss = issuers[issuer];
  const id = `${base}/status/${name}`;
  let credential;
  if(kind === 'bitstring') {
    const list = await bsl.createList({length: 131072});
    for(const i of revoked) list.setStatus(i, true);
    credential = await bsl.createCredential({id, list, statusPurpose: 'revocation', context: [...bsl.VC_BSL_VC_V1_CONTEXT]});
  } else if(kind === 'sl2021') {
    const list = await sl2021.createList({length: 131072});
    for(const i of revoked) list.setStatus(i, true);
    credential = await sl2021.createCredential({id, list, statusPurpose: 'revocation'});
  } else if(kind === 'xfsc') {
    // As XFSC's statuslist-service: 1024 bytes, bit i at byte i/8 mask 1<<(i%8),
    // GZIP, standard base64 without padding.
    const bits = Buffer.alloc(1024);
    for(const i of revoked) bits[i >> 3] |= 1 << (i & 7);
    const encodedList = zlib.gzipSync(bits).toString('base64').replace(/=+$/, '');
    credential = {
      '@context': [CRED_V1, SL_CTX], id, type: ['VerifiableCredential', 'StatusList2021Credential'],
      credentialSubject: {id: `${id}#list`, type: 'StatusList2021', statusPurpose: 'revocation', encodedList},
    };
  } else if(kind === 'bomb') {
    // 64 MiB of zeros: a few dozen KiB compressed.
    const encodedList = 'u' + zlib.gzipSync(Buffer.alloc(64 << 20), {level: 9}).toString('base64url');
    credential = {
      '@context': [CRED_V1, BSL_CTX], id, type: ['VerifiableCredential', 'BitstringStatusListCredential'],
      credentialSubject: {id: `${id}#list`, type: 'BitstringStatusList', statusPurpose: 'revocation', encodedList},
    };
  } else {
    throw new Error(`unknown list kind ${kind}`);
  }
  credential.issuer = iss.did;
  credential.issuanceDate = iso(validFrom ?? Date.now() - 60_000);
  if(validUntil) credential.expirationDate = iso(validUntil);
  if(issuer !== 'web') credential['@context'].push(...suiteContexts(iss));
  const signed = await ldpIssue(credential, issuer);
  lists.set(name, {issuer, kind, revoked: new Set(revoked), credential: signed});
  return {id, credential: signed};
}

// tokenList: {name, issuer ('web'), bits (1), size (1024), statuses: {index: value}, exp (ms since epoch),
//             ttl (s), sub (default: its own URI), typ (default statuslist+jwt)} makes an IETF Token Status
// List with @sd-jwt/jwt-status-list, signs it as the issuer and serves it at /tokenstatus/<name>.
async function makeTokenList(o) {
  const iss = issuers[o.issuer ?? 'web'];
  const uri = `${base}/tokenstatus/${o.name}`;
  const list = new StatusList(new Array(o.size ?? 1024).fill(0), o.bits ?? 1);
  for(const [i, v] of Object.entries(o.statuses ?? {})) list.setStatus(Number(i), v);
  const payload = {iss: iss.did, sub: o.sub ?? uri, iat: nowSec()};
  if(o.exp) payload.exp = Math.floor(o.exp / 1000);
  if(o.ttl) payload.ttl = o.ttl;
  const alg = iss.publicJwk?.crv === 'Ed25519' ? 'EdDSA' : 'ES256';
  const signed = createHeaderAndPayload(list, payload, {alg, typ: 'statuslist+jwt', kid: iss.kid});
  if(o.typ) signed.header.typ = o.typ; // the library sets statuslist+jwt
  const jwt = await signJWT(signed.header, signed.payload, iss.privateKey);
  tokenLists.set(o.name, jwt);
  return {uri, jwt};
}

// serveTokenList: {name, jwt} replaces what /tokenstatus/<name> serves.
function serveTokenList({name, jwt}) {
  tokenLists.set(name, jwt);
  return {};
}

// serveList: {name, credential} replaces what /status/<name> serves (the Go
// tests respell a signed list to check that gxconf refuses the respelling).
function serveList({name, credential}) {
  const l = lists.get(name);
  if(!l) throw new Error(`unknown list ${name}`);
  l.credential = credential;
  return {};
}

function statusEntry(status) {
  if(!status) return undefined;
  const l = lists.get(status.list);
  if(!l) throw new Error(`unknown list ${status.list}`);
  const type = (l.kind === 'bitstring' || l.kind === 'bomb') ? 'BitstringStatusListEntry' : 'StatusList2021Entry';
  const id = `${base}/status/${status.list}`;
  return {id: `${id}#${status.index}`, type, statusPurpose: 'revocation',
    statusListIndex: String(status.index), statusListCredential: id};
}

// issue: {format, issuer, type, claims, validFrom, validUntil (ms since epoch), status:{list,index}, subject, unknownContext,
//         inlineVocab (ldp_vc: the claims vocabulary as an inline context), proofExpires (ldp_vc: ms since epoch),
//         vc2 (ldp_vc: a VC Data Model 2.0 document; bitstring status only),
//         lib (jwt_vc_json: 'did-jwt-vc' issues with did-jwt-vc, EdDSA, from an Ed25519 did:key issuer),
//         tokenStatus (SD-JWT: {list, index} of a tokenList), statusClaim (SD-JWT: the status claim as given)}
async function issue(o) {
  const issuerName = o.issuer ?? 'w3c';
  const iss = issuers[issuerName];
  const type = o.type ?? 'EmployeeCredential';
  const claims = o.claims ?? {memberOf: 'org-a', sector: 'energie'};
  const validFrom = o.validFrom ?? Date.now() - 3600_000;
  const subject = o.subject === 'none' ? undefined : (o.subject ?? holder.did);
  const status = statusEntry(o.status);

  switch(o.format) {
  case 'ldp_vc': {
    if(o.vc2) {
      const credential = {
        // The VC 2.0 context defines DataIntegrityProof, not the 2020 suite.
        '@context': [CRED_V2, UNDEF_CTX, ...(iss.suite === 'DataIntegrityProof' ? [] : suiteContexts(iss))],
        id: `urn:uuid:${crypto.randomUUID()}`, type: ['VerifiableCredential', type],
        issuer: iss.did, validFrom: iso(validFrom),
        credentialSubject: {...(subject ? {id: subject} : {}), ...claims},
      };
      if(o.validUntil) credential.validUntil = iso(o.validUntil);
      if(status) credential.credentialStatus = status;
      return ldpIssue(credential, issuerName, o.proofExpires ? {expires: iso(o.proofExpires)} : undefined);
    }
    const ctx = [CRED_V1];
    if(status) ctx.push(lists.get(o.status.list).kind === 'bitstring' ? BSL_CTX : SL_CTX);
    if(o.unknownContext) ctx.push(UNKNOWN_CTX);
    ctx.push(o.inlineVocab ? INLINE_VOCAB : UNDEF_CTX);
    if(issuerName !== 'web') ctx.push(...suiteContexts(iss));
    const credential = {
      '@context': ctx, id: `urn:uuid:${crypto.randomUUID()}`, type: ['VerifiableCredential', type],
      issuer: iss.did, issuanceDate: iso(validFrom),
      credentialSubject: {...(subject ? {id: subject} : {}), ...claims},
    };
    if(o.validUntil) credential.expirationDate = iso(o.validUntil);
    if(status) credential.credentialStatus = status;
    if(o.unknownContext) credential.credentialSubject.unknownTerm = 'x';
    return ldpIssue(credential, issuerName, o.proofExpires ? {expires: iso(o.proofExpires)} : undefined);
  }
  case 'jwt_vc_json': {
    if(o.lib === 'did-jwt-vc') {
      // did-jwt-vc (Veramo's JWT layer): EdDSA, no kid header — the
      // verifier finds the key from iss.
      const payload = {...(subject ? {sub: subject} : {}), nbf: Math.floor(validFrom / 1000),
        vc: {'@context': [CRED_V1], type: ['VerifiableCredential', type], credentialSubject: {...claims},
          ...(status ? {credentialStatus: status} : {})}};
      if(o.validUntil) payload.exp = Math.floor(o.validUntil / 1000);
      return createVerifiableCredentialJwt(payload, {did: iss.did, signer: EdDSASigner(iss.seed), alg: 'EdDSA'});
    }
    const vcClaim = {
      '@context': [CRED_V1], type: ['VerifiableCredential', type],
      credentialSubject: {...claims},
    };
    if(status) vcClaim.credentialStatus = status;
    const payload = {iss: iss.did, ...(subject ? {sub: subject} : {}), nbf: Math.floor(validFrom / 1000),
      jti: `urn:uuid:${crypto.randomUUID()}`, vc: vcClaim};
    if(o.validUntil) payload.exp = Math.floor(o.validUntil / 1000);
    const header = {alg: o.alg ?? 'ES256', typ: 'JWT', kid: iss.kid};
    if(header.alg === 'none') return unsignedJWT(header, payload);
    return signJWT(header, payload, iss.privateKey);
  }
  case 'vc+jwt':
  case 'vc+ld+json+jwt': {
    const credential = {
      '@context': [CRED_V2], id: `urn:uuid:${crypto.randomUUID()}`, type: ['VerifiableCredential', type],
      issuer: iss.did, validFrom: iso(validFrom),
      credentialSubject: {...(subject ? {id: subject} : {}), ...claims},
    };
    if(o.validUntil) credential.validUntil = iso(o.validUntil);
    if(status) credential.credentialStatus = status;
    const header = {alg: o.alg ?? 'ES256', typ: o.format, cty: o.format === 'vc+jwt' ? 'vc' : 'vc+ld+json', kid: iss.kid};
    if(header.alg === 'none') return unsignedJWT(header, credential);
    return signJWT(header, credential, iss.privateKey);
  }
  case 'vc+sd-jwt':
  case 'dc+sd-jwt': {
    const sd = new SDJwtVcInstance({
      signer: rawSigner(iss.privateKey, 'ES256'), signAlg: 'ES256',
      hasher: digest, hashAlg: 'sha-256', saltGenerator: generateSalt,
    });
    const payload = {iss: iss.did, iat: nowSec(), nbf: Math.floor(validFrom / 1000), vct: type,
      cnf: {jwk: holder.publicJwk}, ...claims};
    if(o.tokenStatus) {
      payload.status = {status_list: {idx: o.tokenStatus.index, uri: `${base}/tokenstatus/${o.tokenStatus.list}`}};
    }
    if(o.statusClaim) payload.status = o.statusClaim;
    if(o.validUntil) payload.exp = Math.floor(o.validUntil / 1000);
    return sd.issue(payload, {_sd: Object.keys(claims)}, {header: {typ: o.format, kid: iss.kid}});
  }
  }
  throw new Error(`unknown format ${o.format}`);
}

function unsignedJWT(header, payload) {
  return `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}.`;
}

// ---------------------------------------------------------------- wallet
// holderDataIntegrity is the holder's Ed25519 key as a Multikey signing
// DataIntegrityProof eddsa-rdfc-2022.
async function holderDataIntegrity(name) {
  if(name !== 'eddsa-rdfc-2022') throw new Error(`harness: vpSuite ${name}`);
  const key = await Ed25519Multikey.from({
    ...holder.key.export({publicKey: true, privateKey: true}), id: holder.kid, controller: holder.did,
  });
  return new DataIntegrityProof({signer: key.signer(), cryptosuite: eddsaRdfc2022});
}

async function fetchRequest(link) {
  const u = new URL(link.replace(/^openid4vp:\/\//, 'https://wallet.invalid/'));
  const requestURI = u.searchParams.get('request_uri');
  const res = await fetch(requestURI);
  if(!res.ok) throw new Error(`request_uri answered ${res.status}`);
  const jwt = await res.text();
  // Verify the request object with the client's did:jwk key.
  const header = jose.decodeProtectedHeader(jwt);
  const clientJwk = JSON.parse(Buffer.from(header.kid.split('#')[0].slice('did:jwk:'.length), 'base64url'));
  const {payload} = await jose.jwtVerify(jwt, await jose.importJWK(clientJwk, header.alg), {typ: 'oauth-authz-req+jwt'});
  if(payload.client_id !== u.searchParams.get('client_id')) throw new Error('client_id mismatch');
  return payload;
}

// The OpenID Foundation's OID4VP library (@openid4vc/openid4vp, as in Credo
// wallets) as a second wallet: it parses the link, fetches and verifies the
// signed request (gxconf's client id is a did:jwk), says which client id
// prefix and OID4VP version it took the request for, builds the response
// and posts it.
const owfCallbacks = {
  fetch: (...args) => fetch(...args),
  hash: (data, alg) => crypto.createHash(alg.replace('-', '')).update(data).digest(),
  verifyJwt: async (signer, {compact}) => {
    if(signer.method !== 'did' || !signer.didUrl.startsWith('did:jwk:')) return {verified: false};
    const jwk = JSON.parse(Buffer.from(signer.didUrl.split('#')[0].slice('did:jwk:'.length), 'base64url'));
    try {
      await jose.compactVerify(compact, await jose.importJWK(jwk, signer.alg));
      return {verified: true, signerJwk: jwk};
    } catch {
      return {verified: false};
    }
  },
};
const owfWallet = new Openid4vpClient({callbacks: owfCallbacks});

async function owfResolve(link) {
  const parsed = owfWallet.parseOpenid4vpAuthorizationRequest({authorizationRequest: link});
  const r = await owfWallet.resolveOpenId4vpAuthorizationRequest({authorizationRequestPayload: parsed.params});
  return {req: r.authorizationRequestPayload, aud: r.client.effective,
    info: {prefix: r.client.prefix, effective: r.client.effective, version: r.version, dcql: !!r.dcql, pex: !!r.pex}};
}

function setPath(obj, dotted, value) {
  const segs = dotted.split('.');
  let cur = obj;
  for(const s of segs.slice(0, -1)) cur = cur[s];
  cur[segs.at(-1)] = value;
}

// present: {link, credential, format, nonce?, aud?, tamper?:{path,value}, tamperDisclosure?, noKB?, pad?, dryRun?,
//           proofExpires? (ldp_vp: ms since epoch),
//           vpSuite? (ldp_vp: 'eddsa-rdfc-2022' signs a VC 2.0 presentation with a DataIntegrityProof by the holder's key),
//           lib? (jwt_vp_json: 'did-jwt-vc' makes the presentation with did-jwt-vc),
//           wallet? ('openid4vp': @openid4vc/openid4vp resolves the request and posts the response;
//                    the result's wallet says how it read the request),
//           extraCredentials? (ldp_vp only, e.g. an issuer's participant credential)}
async function present(o) {
  let req, aud0, walletInfo;
  if(o.wallet === 'openid4vp') {
    ({req, aud: aud0, info: walletInfo} = await owfResolve(o.link));
  } else {
    req = await fetchRequest(o.link);
    aud0 = req.client_id;
  }
  const nonce = o.nonce ?? req.nonce;
  const aud = o.aud ?? aud0;
  let cred = structuredClone(o.credential);
  let vpToken;
  let descriptorFormat;

  if(o.format === 'ldp_vp') {
    if(o.tamper) setPath(cred, o.tamper.path, o.tamper.value);
    // The presentation has the credential's data model version (a VC 2.0
    // credential in a VC 1.1 presentation redefines protected terms).
    const v2 = o.vpSuite || cred['@context']?.[0] === CRED_V2;
    const presentation = {
      '@context': v2 ? (o.vpSuite ? [CRED_V2] : [CRED_V2, ED_CTX]) : [CRED_V1, ED_CTX],
      type: ['VerifiablePresentation'], holder: holder.did,
      verifiableCredential: [cred, ...(o.extraCredentials ?? [])],
    };
    if(o.pad) presentation.verifiableCredential.push({padding: 'x'.repeat(o.pad)});
    const suite = o.vpSuite ? await holderDataIntegrity(o.vpSuite)
      : suiteFor(holder, o.proofExpires ? {expires: iso(o.proofExpires)} : undefined);
    const signed = o.pad ? presentation : await vc.signPresentation({
      presentation, suite, challenge: nonce, domain: aud, documentLoader,
    });
    vpToken = JSON.stringify(signed);
    descriptorFormat = 'ldp_vp';
  } else if(o.format === 'jwt_vp_json') {
    if(o.tamper) {
      const [h, p, s] = cred.split('.');
      const payload = JSON.parse(Buffer.from(p, 'base64url'));
      setPath(payload, o.tamper.path, o.tamper.value);
      cred = `${h}.${b64u(JSON.stringify(payload))}.${s}`;
    }
    const payload = {iss: holder.did, aud, nonce, iat: nowSec(), exp: nowSec() + 300, jti: crypto.randomUUID(),
      vp: {'@context': [CRED_V1], type: ['VerifiablePresentation'], holder: holder.did, verifiableCredential: [cred]}};
    if(o.lib === 'did-jwt-vc') {
      vpToken = await createVerifiablePresentationJwt({vp: payload.vp}, {did: holder.did, signer: EdDSASigner(holder.seed), alg: 'EdDSA'},
        {challenge: nonce, domain: aud});
    } else {
      vpToken = await signJWT({alg: 'EdDSA', typ: 'JWT', kid: holder.kid}, payload, holder.privateKey);
    }
    descriptorFormat = 'jwt_vp_json';
  } else if(o.format === 'sd-jwt') {
    const sd = new SDJwtVcInstance({
      hasher: digest, hashAlg: 'sha-256', saltGenerator: generateSalt,
      kbSigner: rawSigner(holder.privateKey, 'EdDSA'), kbSignAlg: 'EdDSA',
    });
    let issued = cred;
    if(o.tamperDisclosure) {
      // Change the value inside the first disclosure and re-encode it.
      const parts = issued.split('~');
      const d = JSON.parse(Buffer.from(parts[1], 'base64url'));
      d[d.length - 1] = o.tamperDisclosure;
      parts[1] = b64u(JSON.stringify(d));
      issued = parts.join('~');
    }
    const claimNames = {};
    for(const part of issued.split('~').slice(1, -1)) {
      const d = JSON.parse(Buffer.from(part, 'base64url'));
      if(d.length === 3) claimNames[d[1]] = true;
    }
    if(o.tamperDisclosure) {
      // The library would drop a disclosure whose digest the issuer never
      // signed, so build this presentation by hand, with a KB-JWT whose
      // sd_hash covers the tampered disclosure (only the disclosure is wrong).
      const presented = issued.endsWith('~') ? issued : issued + '~';
      const kb = await signJWT({typ: 'kb+jwt', alg: 'EdDSA'},
        {iat: nowSec(), aud, nonce, sd_hash: b64u(sha256(presented))}, holder.privateKey);
      vpToken = presented + kb;
    } else if(o.noKB) {
      vpToken = await sd.present(issued, claimNames);
    } else {
      vpToken = await sd.present(issued, claimNames, {kb: {payload: {iat: nowSec(), aud, nonce}}});
    }
    const header = JSON.parse(Buffer.from(issued.split('.')[0], 'base64url'));
    descriptorFormat = header.typ;
  } else {
    throw new Error(`unknown presentation format ${o.format}`);
  }

  let form;
  if(req.dcql_query) {
    // OID4VP 1.0 DCQL response: {<credential query id>: [presentation]}.
    let credFormat = descriptorFormat;
    if(o.format === 'ldp_vp') credFormat = 'ldp_vc';
    if(o.format === 'jwt_vp_json') {
      const typ = JSON.parse(Buffer.from(String(o.credential).split('.')[0], 'base64url')).typ;
      credFormat = (!typ || typ === 'JWT') ? 'jwt_vc_json' : typ;
    }
    const q = req.dcql_query.credentials.find(c => c.format === credFormat);
    if(!q) throw new Error(`no DCQL query for ${credFormat}`);
    const presentation = o.format === 'ldp_vp' ? JSON.parse(vpToken) : vpToken;
    form = {vp_token: JSON.stringify({[q.id]: [presentation]}), state: req.state};
  } else {
    const submission = {
      id: crypto.randomUUID(), definition_id: req.presentation_definition.id,
      descriptor_map: [{id: req.presentation_definition.input_descriptors[0].id, format: descriptorFormat, path: '$'}],
    };
    form = {vp_token: vpToken, presentation_submission: JSON.stringify(submission), state: req.state};
  }
  if(o.dryRun) return {status: 0, body: '', response_uri: req.response_uri, form, request: req};
  if(o.wallet === 'openid4vp') {
    const ldp = o.format === 'ldp_vp';
    const payload = req.dcql_query ? {vp_token: JSON.parse(form.vp_token)}
      : {vp_token: ldp ? JSON.parse(vpToken) : vpToken, presentation_submission: JSON.parse(form.presentation_submission)};
    const created = await owfWallet.createOpenid4vpAuthorizationResponse({authorizationRequestPayload: req, authorizationResponsePayload: payload});
    const {response} = await owfWallet.submitOpenid4vpAuthorizationResponse({
      authorizationRequestPayload: req, authorizationResponsePayload: created.authorizationResponsePayload});
    return {status: response.status, body: await response.text(), response_uri: req.response_uri, form, request: req, wallet: walletInfo};
  }
  const res = await fetch(req.response_uri, {
    method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, body: new URLSearchParams(form),
  });
  return {status: res.status, body: await res.text(), response_uri: req.response_uri, form, request: req};
}

// ---------------------------------------------------------------- protocol
const handlers = {
  info: async () => identities(),
  list: makeList,
  serveList,
  tokenList: makeTokenList,
  serveTokenList,
  issue,
  present,
};

function identities() {
  return {
    port, base,
    issuers: Object.fromEntries(Object.entries(issuers).map(([k, v]) => [k, v.did])),
    holder: holder.did,
  };
}

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

reply({ready: true, ...identities()});

// Commands run one at a time, in order.
let queue = Promise.resolve();
const rl = readline.createInterface({input: process.stdin});
rl.on('line', line => {
  queue = queue.then(() => handle(line));
});

async function handle(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch(e) {
    reply({id: null, ok: false, error: `bad JSON: ${e.message}`});
    return;
  }
  const h = handlers[msg.cmd];
  if(!h) {
    reply({id: msg.id, ok: false, error: `unknown command ${msg.cmd}`});
    return;
  }
  try {
    reply({id: msg.id, ok: true, result: await h(msg.args ?? {})});
  } catch(e) {
    reply({id: msg.id, ok: false, error: e.stack ?? String(e)});
  }
}

rl.on('close', () => {
  queue.then(() => {
    server.close();
    process.exit(0);
  });
});
