// Cloister HPKE <-> hpke-js (@hpke/core), both directions, base and auth
// modes, the three AEADs, plus the exporter. Usage: node interop.mjs HPKE_TOOL
import { execFileSync } from "node:child_process";
import { CipherSuite, DhkemX25519HkdfSha256, HkdfSha256, Aes128Gcm, Aes256Gcm } from "@hpke/core";
import { Chacha20Poly1305 } from "@hpke/chacha20poly1305";

const tool = process.argv[2];
const hex = (b) => (b.byteLength ? Buffer.from(b).toString("hex") : "-");
const unhex = (s) => (s === "-" ? new Uint8Array(0) : new Uint8Array(Buffer.from(s, "hex")));
const run = (...args) => execFileSync(tool, args, { encoding: "utf8" }).trim().split(" ");
const te = new TextEncoder();
const expCtx = te.encode("cloister-interop");

let passed = 0, failed = 0;
const check = (cond, name) => {
  if (cond) { passed++; console.log(`ok - ${name}`); } else { failed++; console.log(`not ok - ${name}`); }
};

const aeads = [[1, () => new Aes128Gcm()], [2, () => new Aes256Gcm()], [3, () => new Chacha20Poly1305()]];
for (const [aeadId, mk] of aeads) {
  const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: mk() });
  for (const mode of [0, 2]) {
    const tag = `aead ${aeadId} mode ${mode === 0 ? "base" : "auth"}`;
    const info = te.encode(`info ${tag}`), aad = te.encode("aad"), msg = te.encode(`patient note for ${tag}`);
    // hpke-js seals, Cloister opens
    {
      const [skR, pkR] = run("keygen");
      const recipientPublicKey = await suite.kem.deserializePublicKey(unhex(pkR).buffer);
      const params = { recipientPublicKey, info };
      let pkS;
      if (mode === 2) {
        const skp = await suite.kem.generateKeyPair();
        params.senderKey = skp;
        pkS = hex(await suite.kem.serializePublicKey(skp.publicKey));
      }
      const sender = await suite.createSenderContext(params);
      const ct = await sender.seal(msg, aad);
      const exp = await sender.export(expCtx, 32);
      const args = ["open", String(mode), String(aeadId), skR, hex(sender.enc), hex(info), hex(aad), hex(ct)];
      if (pkS) args.push(pkS);
      const [pt, cexp] = run(...args);
      check(pt === hex(msg), `hpke-js -> Cloister: ${tag}: plaintext`);
      check(cexp === hex(exp), `hpke-js -> Cloister: ${tag}: exporter`);
    }
    // Cloister seals, hpke-js opens
    {
      const rkp = await suite.kem.generateKeyPair();
      const pkR = hex(await suite.kem.serializePublicKey(rkp.publicKey));
      const args = ["seal", String(mode), String(aeadId), pkR, hex(info), hex(aad), hex(msg)];
      let senderPublicKey;
      if (mode === 2) {
        const [skS, pkS] = run("keygen");
        args.push(skS);
        senderPublicKey = await suite.kem.deserializePublicKey(unhex(pkS).buffer);
      }
      const [enc, ct, cexp] = run(...args);
      const params = { recipientKey: rkp, enc: unhex(enc).buffer, info };
      if (senderPublicKey) params.senderPublicKey = senderPublicKey;
      const recipient = await suite.createRecipientContext(params);
      const pt = new Uint8Array(await recipient.open(unhex(ct).buffer, aad));
      check(hex(pt) === hex(msg), `Cloister -> hpke-js: ${tag}: plaintext`);
      check(hex(await recipient.export(expCtx, 32)) === cexp, `Cloister -> hpke-js: ${tag}: exporter`);
      // a flipped ciphertext byte must be rejected by hpke-js too
      const bad = unhex(ct); bad[0] ^= 1;
      const r2 = await suite.createRecipientContext(params);
      let rejected = false;
      try { await r2.open(bad.buffer, aad); } catch { rejected = true; }
      check(rejected, `Cloister -> hpke-js: ${tag}: tampered ciphertext rejected`);
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
