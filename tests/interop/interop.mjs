// Drives cloister-kms with the official AWS SDK for JavaScript v3 and its own
// SigV4 signer. Env: KMS_ENDPOINT, KMS_AK, KMS_SK, optional RECIPIENT_DOC
// (base64 attestation doc file), RECIPIENT_KEY (PEM RSA private key file).
import {
  KMSClient, CreateKeyCommand, CreateAliasCommand, EncryptCommand, DecryptCommand,
  GenerateDataKeyCommand, ReEncryptCommand, DescribeKeyCommand, ListAliasesCommand,
  GenerateRandomCommand, DisableKeyCommand, EnableKeyCommand, PutKeyPolicyCommand,
  GetKeyPolicyCommand, ListKeysCommand, CreateGrantCommand,
} from '@aws-sdk/client-kms';
import { readFileSync } from 'node:fs';
import { createPrivateKey, privateDecrypt, createDecipheriv, constants } from 'node:crypto';
import assert from 'node:assert/strict';

const endpoint = process.env.KMS_ENDPOINT;
const region = 'us-east-1';
const good = { accessKeyId: process.env.KMS_AK, secretAccessKey: process.env.KMS_SK };
const mk = (creds, extra = {}) => new KMSClient({ endpoint, region, credentials: creds, maxAttempts: 1, ...extra });
const kms = mk(good);
let passed = 0;
const step = async (name, fn) => { await fn(); passed++; console.log(`ok ${passed} - ${name}`); };
const expectErr = async (p, name) => {
  try { await p; } catch (e) {
    assert.equal(e.name, name, `expected ${name}, got ${e.name}: ${e.message}`);
    return e;
  }
  assert.fail(`expected ${name}, call succeeded`);
};

const ctx = { model: 'medgemma-4b', digest: 'ab'.repeat(32) };
let keyId, keyArn, key2;

await step('CreateKey', async () => {
  const r = await kms.send(new CreateKeyCommand({ Description: 'interop' }));
  keyId = r.KeyMetadata.KeyId; keyArn = r.KeyMetadata.Arn;
  assert.match(keyId, /^[0-9a-f-]{36}$/);
  assert.equal(r.KeyMetadata.KeyState, 'Enabled');
  assert.ok(r.KeyMetadata.CreationDate instanceof Date);
  key2 = (await kms.send(new CreateKeyCommand({}))).KeyMetadata.KeyId;
});
await step('CreateAlias + DescribeKey by alias', async () => {
  await kms.send(new CreateAliasCommand({ AliasName: 'alias/interop', TargetKeyId: keyId }));
  const d = await kms.send(new DescribeKeyCommand({ KeyId: 'alias/interop' }));
  assert.equal(d.KeyMetadata.Arn, keyArn);
  const l = await kms.send(new ListAliasesCommand({}));
  assert.ok(l.Aliases.some(a => a.AliasName === 'alias/interop' && a.TargetKeyId === keyId));
  await expectErr(kms.send(new CreateAliasCommand({ AliasName: 'alias/interop', TargetKeyId: key2 })),
                  'AlreadyExistsException');
  const lk = await kms.send(new ListKeysCommand({ Limit: 1 }));
  assert.equal(lk.Keys.length, 1); assert.equal(lk.Truncated, true);
});
let blob;
await step('Encrypt / Decrypt with encryption context', async () => {
  const pt = Buffer.from('hello from the aws sdk');
  const e = await kms.send(new EncryptCommand({ KeyId: 'alias/interop', Plaintext: pt, EncryptionContext: ctx }));
  blob = e.CiphertextBlob;
  assert.equal(e.KeyId, keyArn);
  const d = await kms.send(new DecryptCommand({ CiphertextBlob: blob, EncryptionContext: ctx }));
  assert.equal(Buffer.from(d.Plaintext).toString(), 'hello from the aws sdk');
  assert.equal(d.KeyId, keyArn);
  await expectErr(kms.send(new DecryptCommand({ CiphertextBlob: blob, EncryptionContext: { model: 'x' } })),
                  'InvalidCiphertextException');
  await expectErr(kms.send(new DecryptCommand({ CiphertextBlob: blob, EncryptionContext: ctx, KeyId: key2 })),
                  'IncorrectKeyException');
  await expectErr(kms.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.alloc(4097) })),
                  'ValidationException');
  await expectErr(kms.send(new DescribeKeyCommand({ KeyId: 'alias/nope' })), 'NotFoundException');
});
await step('GenerateDataKey', async () => {
  const g = await kms.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256', EncryptionContext: ctx }));
  assert.equal(g.Plaintext.length, 32);
  const d = await kms.send(new DecryptCommand({ CiphertextBlob: g.CiphertextBlob, EncryptionContext: ctx }));
  assert.deepEqual(Buffer.from(d.Plaintext), Buffer.from(g.Plaintext));
  const r = await kms.send(new GenerateRandomCommand({ NumberOfBytes: 48 }));
  assert.equal(r.Plaintext.length, 48);
});
await step('ReEncrypt', async () => {
  const r = await kms.send(new ReEncryptCommand({ CiphertextBlob: blob, SourceEncryptionContext: ctx,
    DestinationKeyId: key2, DestinationEncryptionContext: { other: 'ctx' } }));
  assert.equal(r.SourceKeyId, keyArn);
  const d = await kms.send(new DecryptCommand({ CiphertextBlob: r.CiphertextBlob, EncryptionContext: { other: 'ctx' } }));
  assert.equal(Buffer.from(d.Plaintext).toString(), 'hello from the aws sdk');
});
await step('Disable / Enable / policies', async () => {
  await kms.send(new DisableKeyCommand({ KeyId: key2 }));
  await expectErr(kms.send(new EncryptCommand({ KeyId: key2, Plaintext: Buffer.from('x') })), 'DisabledException');
  await kms.send(new EnableKeyCommand({ KeyId: key2 }));
  const p = await kms.send(new GetKeyPolicyCommand({ KeyId: key2, PolicyName: 'default' }));
  assert.match(p.Policy, /kms:\*/);
  await expectErr(kms.send(new PutKeyPolicyCommand({ KeyId: key2, PolicyName: 'default', Policy: '{"Statement":[]}' })),
                  'MalformedPolicyDocumentException');
  const deny = JSON.stringify({ Version: '2012-10-17', Statement: [
    { Sid: 'Admin', Effect: 'Allow', Principal: { AWS: 'arn:aws:iam::111122223333:user/interop' }, Action: 'kms:*', Resource: '*' },
    { Sid: 'NoEncrypt', Effect: 'Deny', Principal: '*', Action: 'kms:Encrypt', Resource: '*' }] });
  await kms.send(new PutKeyPolicyCommand({ KeyId: key2, PolicyName: 'default', Policy: deny }));
  const e = await expectErr(kms.send(new EncryptCommand({ KeyId: key2, Plaintext: Buffer.from('x') })),
                            'AccessDeniedException');
  assert.match(e.message, /explicit deny/);
  // AWS's lockout safety check, and its bypass flag, as the SDK sends them
  const lockout = JSON.stringify({ Version: '2012-10-17', Statement: [
    { Sid: 'UseOnly', Effect: 'Allow', Principal: { AWS: 'arn:aws:iam::111122223333:user/interop' },
      Action: ['kms:Encrypt', 'kms:Decrypt'], Resource: '*' }] });
  const l = await expectErr(kms.send(new PutKeyPolicyCommand({ KeyId: key2, PolicyName: 'default', Policy: lockout })),
                            'MalformedPolicyDocumentException');
  assert.match(l.message, /lockout safety check/);
  await kms.send(new PutKeyPolicyCommand({ KeyId: key2, PolicyName: 'default', Policy: lockout,
                                           BypassPolicyLockoutSafetyCheck: true }));
  await expectErr(kms.send(new GetKeyPolicyCommand({ KeyId: key2, PolicyName: 'default' })), 'AccessDeniedException');
  // grants are not implemented; the key policy still decides first
  await expectErr(kms.send(new CreateGrantCommand({ KeyId: keyId, GranteePrincipal: 'arn:aws:iam::111122223333:user/x',
                                                    Operations: ['Decrypt'] })), 'UnsupportedOperationException');
});
await step('wrong secret -> InvalidSignatureException', async () => {
  const bad = mk({ accessKeyId: good.accessKeyId, secretAccessKey: good.secretAccessKey.replace(/.$/, c => c === 'A' ? 'B' : 'A') });
  await expectErr(bad.send(new DescribeKeyCommand({ KeyId: keyId })), 'InvalidSignatureException');
  const unknown = mk({ accessKeyId: 'CLKAUNKNOWNUNKNOWN00', secretAccessKey: good.secretAccessKey });
  await expectErr(unknown.send(new DescribeKeyCommand({ KeyId: keyId })), 'UnrecognizedClientException');
});
await step('expired signature -> InvalidSignatureException', async () => {
  // The SDK signs with its clock; skew it 10 minutes into the past.
  const old = mk(good, { systemClockOffset: -10 * 60 * 1000 });
  const e = await expectErr(old.send(new DescribeKeyCommand({ KeyId: keyId })), 'InvalidSignatureException');
  assert.match(e.message, /Signature expired/);
});
await step('tampered body -> InvalidSignatureException', async () => {
  const t = mk(good);
  t.middlewareStack.add((next) => async (args) => {
    args.request.body = args.request.body.replace(keyId, key2);
    return next(args);
  }, { step: 'finalizeRequest', priority: 'low', name: 'tamper' });
  await expectErr(t.send(new DescribeKeyCommand({ KeyId: keyId })), 'InvalidSignatureException');
});
if (process.env.RECIPIENT_DOC) {
  await step('Decrypt with Recipient -> CiphertextForRecipient', async () => {
    const doc = Buffer.from(readFileSync(process.env.RECIPIENT_DOC, 'utf8').trim(), 'base64');
    const priv = createPrivateKey(readFileSync(process.env.RECIPIENT_KEY));
    const g = await kms.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256', EncryptionContext: ctx }));
    const d = await kms.send(new DecryptCommand({ CiphertextBlob: g.CiphertextBlob, EncryptionContext: ctx,
      Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: doc } }));
    assert.equal(d.Plaintext, undefined);
    assert.ok(d.CiphertextForRecipient.length > 256);
    const key = unwrapCms(Buffer.from(d.CiphertextForRecipient), priv);
    assert.deepEqual(key, Buffer.from(g.Plaintext));
  });
}
console.log(`interop: ${passed} steps passed`);

// Minimal DER walk of CMS EnvelopedData (one KTRI, RSAES-OAEP-SHA256, AES-256-CBC),
// independent of cloister's own unwrap.
function unwrapCms(der, priv) {
  const rd = (b, o) => { const t = b[o]; let l = b[o + 1], h = 2;
    if (l & 0x80) { const n = l & 0x7f; l = 0; for (let i = 0; i < n; i++) l = l * 256 + b[o + 2 + i]; h += n; }
    return { t, h, l, s: o + h, e: o + h + l }; };
  const kids = (b, n) => { const out = []; let o = n.s; while (o < n.e) { const c = rd(b, o); out.push(c); o = c.e; } return out; };
  const ci = rd(der, 0); const [, ctx0] = kids(der, ci);            // ContentInfo
  const env = rd(der, ctx0.s);                                      // EnvelopedData
  const ek = kids(der, env);
  let i = 1; if (ek[i].t === 0xa0) i++;                             // originatorInfo
  const ris = kids(der, ek[i]); assert.equal(ris.length, 1);
  const ktri = kids(der, ris[0]);                                   // version, rid, alg, encKey
  const encKey = der.subarray(ktri[3].s, ktri[3].e);
  const cek = privateDecrypt({ key: priv, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, encKey);
  const eci = kids(der, ek[i + 1]);                                 // contentType, alg, [0] content
  const alg = kids(der, eci[1]); const iv = der.subarray(alg[1].s, alg[1].e);
  assert.equal(der.subarray(alg[0].s, alg[0].e).toString('hex'), '60864801650304012a'); // aes256-CBC
  const content = der.subarray(eci[2].s, eci[2].e);
  const dc = createDecipheriv('aes-256-cbc', cek, iv);
  return Buffer.concat([dc.update(content), dc.final()]);
}
