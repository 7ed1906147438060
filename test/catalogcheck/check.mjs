// Independent checks of gxconf's catalogue credentials (not gxconf code):
//   node check.mjs <export-dir> [extra.jwt ...]
// <export-dir> is what `gxconf catalog export` writes (did.json, *.jwt,
// conference-tier-shape.ttl). Every VC-JWT is verified with jose against the
// did:web document (header typ/cty/kid/iss as the XFSC catalogue requires),
// converted to RDF with jsonld and validated with rdf-validate-shacl against
// gxconf's published vk:ConferenceTier shape and the Gaia-X 2511 subset in
// gx2511-subset.ttl. Extra JWTs (entitlements, the status list) are verified
// the same way; an entitlement's status bit is read from the status list
// here (GZIP, MSB first, W3C Bitstring Status List).
// Self-tests show the checks can fail: a tampered signature, a tier of 30,
// an offering without gx:providedBy.
// Prints one JSON report on stdout.

import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import {fileURLToPath} from 'node:url';
import * as jose from 'jose';
import jsonld from 'jsonld';
import {Parser} from 'n3';
import SHACLValidator from 'rdf-validate-shacl';
import {contexts as credContexts} from '@digitalbazaar/credentials-context';

const here = path.dirname(fileURLToPath(import.meta.url));
const [dir, ...extra] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node check.mjs <export-dir> [extra.jwt ...]');
  process.exit(2);
}

// JSON-LD contexts: the W3C VC 2.0 context from its npm package; the Gaia-X
// 2511 namespace IRI as a context that only binds the prefix. Nothing is
// fetched from the network.
const GX = 'https://w3id.org/gaia-x/2511#';
const documentLoader = async (url) => {
  if (credContexts.has(url)) return {documentUrl: url, document: credContexts.get(url)};
  if (url === GX) return {documentUrl: url, document: {'@context': {gx: GX}}};
  throw new Error('context not pinned: ' + url);
};

const didDoc = JSON.parse(fs.readFileSync(path.join(dir, 'did.json'), 'utf8'));
const methods = new Map(didDoc.verificationMethod.map((m) => [m.id, m]));

async function verify(jwt) {
  const header = jose.decodeProtectedHeader(jwt);
  const problems = [];
  if (header.typ !== 'vc+jwt') problems.push('typ ' + header.typ);
  if (header.cty !== 'vc+ld+json') problems.push('cty ' + header.cty);
  if (header.iss !== didDoc.id) problems.push('iss ' + header.iss);
  const vm = methods.get(header.kid);
  if (!vm) throw new Error('kid ' + header.kid + ' is no verification method of ' + didDoc.id);
  if (!(didDoc.assertionMethod || []).includes(header.kid)) problems.push('kid is no assertion method');
  const key = await jose.importJWK(vm.publicKeyJwk, header.alg);
  const {payload} = await jose.compactVerify(jwt, key, {algorithms: ['ES256', 'PS256']});
  const vc = JSON.parse(new TextDecoder().decode(payload));
  if (vc.issuer !== didDoc.id) problems.push('issuer ' + vc.issuer);
  if (!vc.type.includes('VerifiableCredential')) problems.push('type');
  if (problems.length) throw new Error(problems.join(', '));
  return {header, vc};
}

async function toQuads(vc) {
  const nquads = await jsonld.toRDF(vc, {format: 'application/n-quads', documentLoader, safe: true});
  // The data graph is the credential subjects' claims, as a catalogue
  // stores them: the envelope's own statements (issuer, validFrom, its
  // types) are not claims.
  return new Parser({format: 'N-Quads'}).parse(nquads)
    .filter((q) => q.graph.termType === 'DefaultGraph' && q.subject.value !== vc.id);
}

async function validate(shapesTTL, quads) {
  const shapes = new Parser().parse(shapesTTL);
  const v = new SHACLValidator(shapes);
  const report = await v.validate(v.factory.dataset(quads));
  return {
    conforms: report.conforms,
    results: report.results.map((r) => ({
      focus: r.focusNode?.value, path: r.path?.value, message: r.message.map((m) => m.value).join('; '),
      constraint: r.sourceConstraintComponent?.value,
    })),
  };
}

const report = {did: didDoc.id, verified: 0, kinds: {}, errors: [], extra: []};
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.jwt')).sort();
const shapesTTL = fs.readFileSync(path.join(dir, 'conference-tier-shape.ttl'), 'utf8') + '\n' +
  fs.readFileSync(path.join(here, 'gx2511-subset.ttl'), 'utf8');
let quads = [];
const vcs = [];
for (const f of files) {
  const jwt = fs.readFileSync(path.join(dir, f), 'utf8').trim();
  try {
    const {vc} = await verify(jwt);
    report.verified++;
    const t = vc.credentialSubject.type;
    report.kinds[t] = (report.kinds[t] || 0) + 1;
    vcs.push(vc);
    quads = quads.concat(await toQuads(vc));
  } catch (e) {
    report.errors.push(f + ': ' + e.message);
  }
}
report.triples = quads.length;
report.shacl = await validate(shapesTTL, quads);

// Mandatory 2511 fields of every offering, read from the JSON too.
report.mandatory = vcs.filter((vc) => vc.credentialSubject.type === 'gx:ServiceOffering')
  .every((vc) => vc.credentialSubject['gx:providedBy']?.id && vc.credentialSubject['gx:serviceOfferingTermsAndConditions']?.id);

// Self-tests.
const tierVC = vcs.find((vc) => vc.credentialSubject.type === 'vk:ConferenceTier');
const offerVC = vcs.find((vc) => vc.credentialSubject.type === 'gx:ServiceOffering');
const badTier = structuredClone(tierVC);
badTier.credentialSubject['vk:maxParticipants'] = 30;
const badOffer = structuredClone(offerVC);
delete badOffer.credentialSubject['gx:providedBy'];
const rest = (skip) => Promise.all(vcs.filter((vc) => vc !== skip).map(toQuads)).then((l) => l.flat());
report.selftest = {
  tier30Conforms: (await validate(shapesTTL, (await rest(tierVC)).concat(await toQuads(badTier)))).conforms,
  noProviderConforms: (await validate(shapesTTL, (await rest(offerVC)).concat(await toQuads(badOffer)))).conforms,
};
const sample = fs.readFileSync(path.join(dir, files[0]), 'utf8').trim().split('.');
sample[2] = sample[2].slice(0, -4) + (sample[2].endsWith('AAAA') ? 'BBBB' : 'AAAA');
try {
  await verify(sample.join('.'));
  report.selftest.tamperedVerifies = true;
} catch {
  report.selftest.tamperedVerifies = false;
}

// Extra credentials: entitlements and the status list.
let statusList = null;
const extras = [];
for (const f of extra) {
  const jwt = fs.readFileSync(f, 'utf8').trim();
  try {
    const {vc} = await verify(jwt);
    extras.push({file: path.basename(f), vc});
    if (vc.type.includes('BitstringStatusListCredential')) statusList = vc;
  } catch (e) {
    report.errors.push(path.basename(f) + ': ' + e.message);
  }
}
for (const {file, vc} of extras) {
  const out = {file, type: vc.type, subject: vc.credentialSubject.id};
  const st = vc.credentialStatus;
  if (st && statusList && st.statusListCredential === statusList.id) {
    let enc = statusList.credentialSubject.encodedList;
    if (enc.startsWith('u')) enc = enc.slice(1);
    const bits = zlib.gunzipSync(Buffer.from(enc, 'base64url'));
    const i = Number(st.statusListIndex);
    out.statusIndex = i;
    out.revoked = (bits[Math.floor(i / 8)] & (0x80 >> (i % 8))) !== 0;
  }
  report.extra.push(out);
}
console.log(JSON.stringify(report));
