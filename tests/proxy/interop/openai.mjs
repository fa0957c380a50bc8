// The official openai npm client against `cloister proxy` (driven by ../proxy_e2e.sh).
// MODE=main: completions, streaming, parameters, errors. MODE=refused: the proxy must refuse
// (attestation mismatch) with an OpenAI-shaped error naming EXPECT_CHECK.
// MODE=token: TOKEN is the right bearer token.
import OpenAI from "openai";

const env = process.env;
let fails = 0;
const ok = (m) => console.log(`ok - ${m}`);
const bad = (m) => { fails++; console.log(`not ok - ${m}`); };
const check = (cond, m, extra = "") => (cond ? ok(m) : bad(`${m} ${extra}`));
const client = (apiKey = "unused") => new OpenAI({ baseURL: `${env.PROXY_URL}/v1`, apiKey, maxRetries: 0, timeout: 60000 });
const Q = env.Q;
const msgs = [{ role: "user", content: Q }];

async function apiError(p) {
  try { await p; return null; } catch (e) { return e; }
}

async function main() {
  const c = client(env.TOKEN || "unused");
  if (env.MODE === "refused") {
    const e = await apiError(c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 4 }));
    check(e instanceof OpenAI.APIError && e.status === 502, "refused: status 502", `${e && e.status} ${e && e.message}`);
    check(e && e.error && e.error.type === "attestation_error", "refused: error type attestation_error", JSON.stringify(e && e.error));
    check(e && typeof e.error?.message === "string" && new RegExp(env.EXPECT_CHECK).test(e.error.message),
      `refused: the message names the check (${env.EXPECT_CHECK})`, JSON.stringify(e && e.error));
    const s = await apiError(c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 4, stream: true }));
    check(s instanceof OpenAI.APIError && s.status === 502, "refused: a streamed request too", `${s && s.status}`);
    return;
  }
  if (env.MODE === "licensed") {
    // the proxy holds a licensed credential: served, whole and streamed
    const r = await c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 8, temperature: 0 });
    check(typeof r.choices[0].message.content === "string" && r.usage?.completion_tokens > 0,
      "licensed: served (chat.completion with usage)", JSON.stringify(r));
    const st = await c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 8, temperature: 0, stream: true });
    let text = "";
    for await (const ch of st) text += ch.choices[0]?.delta?.content ?? "";
    check(text === r.choices[0].message.content, "licensed: streamed, the same answer", `'${text}'`);
    return;
  }
  if (env.MODE === "unlicensed") {
    // the proxy has no credential (or one that matches no licence): the enclave's refusal, in OpenAI's shape
    for (const stream of [false, true]) {
      const e = await apiError(c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 4, stream }));
      check(e instanceof OpenAI.AuthenticationError && e.status === 401, `unlicensed${stream ? " (stream)" : ""}: 401`,
        `${e && e.status} ${e && e.message}`);
      check(e && e.error?.type === "authentication_error" && new RegExp(env.EXPECT_REASON).test(e.error?.message ?? ""),
        `unlicensed${stream ? " (stream)" : ""}: authentication_error naming the reason (${env.EXPECT_REASON})`,
        JSON.stringify(e && e.error));
    }
    return;
  }
  if (env.MODE === "image") {
    const fs = await import("node:fs");
    const url = "data:image/png;base64," + fs.readFileSync(env.IMAGE_FILE).toString("base64");
    // the image first, then the text: the order `cloister run --image` and `cloister ask --image` use
    const content = [{ type: "image_url", image_url: { url } }, { type: "text", text: Q }];
    const r = await c.chat.completions.create({ model: "cloister", messages: [{ role: "user", content }], max_tokens: 8, temperature: 0 });
    check(r.choices[0].message.content === env.WANT_IMAGE, "an image content part: the answer equals cloister run --image",
      `proxy='${r.choices[0].message.content}' run='${env.WANT_IMAGE}'`);
    const st = await c.chat.completions.create({ model: "cloister", messages: [{ role: "user", content }], max_tokens: 8, temperature: 0, stream: true });
    let text = "";
    for await (const ch of st) text += ch.choices[0]?.delta?.content ?? "";
    check(text === env.WANT_IMAGE, "an image content part, streamed: the same answer", `'${text}'`);
    return;
  }
  if (env.MODE === "token") {
    const e = await apiError(client("wrong-token-wrong-token").chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 2 }));
    check(e instanceof OpenAI.AuthenticationError && e.status === 401, "a wrong bearer token: 401", `${e && e.status}`);
    check(e?.error?.code === "invalid_api_key", "401 in OpenAI's error shape", JSON.stringify(e?.error));
    const e2 = await apiError(client("").models.list());
    check(e2 instanceof OpenAI.APIError && e2.status === 401, "no token: 401 on /v1/models too", `${e2 && e2.status}`);
    const r = await c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 2, temperature: 0 });
    check(r.choices[0].message.content.length > 0, "the right token: answered");
    return;
  }

  // models
  const models = await c.models.list();
  const m = models.data[0];
  check(models.data.length === 1 && m.id === "cloister" && /^[0-9a-f]{64}$/.test(m.model_sha256) && m.attested === true,
    "/v1/models: the attested model with its digest", JSON.stringify(models.data));
  check(m.model_sha256 === env.MODEL_SHA256, "/v1/models: digest is the sealed model's", m.model_sha256);

  // whole completions equal cloister run (greedy, and seeded sampling)
  const r = await c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 24, temperature: 0 });
  check(r.object === "chat.completion" && r.choices.length === 1 && r.choices[0].message.role === "assistant",
    "a chat.completion object");
  check(r.choices[0].message.content === env.WANT_GREEDY, "greedy answer equals cloister run",
    `proxy='${r.choices[0].message.content}' run='${env.WANT_GREEDY}'`);
  check(r.usage && r.usage.completion_tokens >= 1 && r.usage.prompt_tokens >= 1, "usage reported", JSON.stringify(r.usage));
  const s7 = await c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 24, temperature: 0.8, seed: 7 });
  check(s7.choices[0].message.content === env.WANT_SEEDED, "seeded sampled answer (temperature 0.8, seed 7) equals cloister run",
    `proxy='${s7.choices[0].message.content}' run='${env.WANT_SEEDED}'`);
  const mt = await c.chat.completions.create({ model: "cloister", messages: msgs, max_completion_tokens: 3, temperature: 0, top_p: 0.9, stop: ["zzzz"] });
  check(mt.usage.completion_tokens <= 3 && mt.choices[0].finish_reason === "length",
    "max_completion_tokens, top_p and stop accepted", JSON.stringify(mt.usage));

  // streamed: pieces arrive one by one, their concatenation is the whole answer
  const t0 = performance.now();
  const stream = await c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 24, temperature: 0, stream: true });
  const times = [], parts = [];
  let finish = null, role = null;
  for await (const ch of stream) {
    times.push(performance.now() - t0);
    const d = ch.choices[0]?.delta ?? {};
    if (d.role) role = d.role;
    if (d.content) parts.push(d.content);
    if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
  }
  console.log(`# streamed: ${parts.length} content chunks at ms ${times.map((t) => t.toFixed(1)).join(" ")}`);
  check(parts.length >= 3, "streamed: several content chunks", `${parts.length}`);
  check(role === "assistant" && finish === "length", "streamed: assistant role first, finish_reason last", `${role} ${finish}`);
  check(parts.join("") === env.WANT_GREEDY, "streamed answer equals cloister run", `'${parts.join("")}'`);

  // a longer answer: its pieces arrive spread over the generation, not all at the end
  {
    const t1 = performance.now();
    const st = await c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 300, temperature: 0, stream: true });
    const at = [];
    for await (const ch of st) if (ch.choices[0]?.delta?.content) at.push(performance.now() - t1);
    const span = at[at.length - 1] - at[0];
    const ms = new Set(at.map((t) => Math.floor(t))).size;
    console.log(`# 300-token stream: ${at.length} pieces, first at ${at[0].toFixed(1)} ms, last at ${at[at.length - 1].toFixed(1)} ms, ${ms} distinct milliseconds`);
    check(at.length >= 100 && ms >= 3 && span > 0, "streamed: pieces arrived incrementally (at several distinct times)", `${at.length} ${ms} ${span}`);
  }

  // errors in OpenAI's shape
  let e = await apiError(c.chat.completions.create({ model: "gpt-4o", messages: msgs }));
  check(e instanceof OpenAI.NotFoundError && e.error?.code === "model_not_found" && e.error?.param === "model",
    "a wrong model name: 404 model_not_found", `${e && e.status} ${JSON.stringify(e?.error)}`);
  e = await apiError(c.chat.completions.create({ model: "cloister", messages: msgs, n: 2 }));
  check(e instanceof OpenAI.BadRequestError && e.error?.param === "n", "n=2: 400 naming n", `${e && e.status}`);
  const big = "x".repeat(Number(env.MAX_REQUEST) + 1);
  e = await apiError(c.chat.completions.create({ model: "cloister", messages: [{ role: "user", content: big }] }));
  check(e instanceof OpenAI.APIError && e.status === 413 && e.error?.code === "request_too_large",
    "an oversized request: 413", `${e && e.status} ${JSON.stringify(e?.error)}`);
  e = await apiError(c.chat.completions.create({ model: "cloister", messages: [{ role: "tool", content: "x" }] }));
  check(e instanceof OpenAI.BadRequestError && e.error?.param === "messages[0].role", "a bad role: 400 naming it", `${e && e.status}`);
  e = await apiError(c.chat.completions.create({ model: "cloister", messages: msgs, temperature: 7 }));
  check(e instanceof OpenAI.BadRequestError && e.error?.param === "temperature", "temperature 7: 400 naming it", `${e && e.status}`);
  e = await apiError(c.chat.completions.create({ model: "cloister", messages: [{ role: "user", content: [
    { type: "image_url", image_url: { url: "https://example.com/x.png" } }] }] }));
  check(e instanceof OpenAI.BadRequestError && e.error?.code === "invalid_image_url",
    "a remote image URL: 400 (the proxy fetches nothing)", `${e && e.status}`);

  // an image content part goes to the enclave as sent: an answer once the enclave takes images,
  // until then the enclave's own refusal relayed in OpenAI's shape
  const png = "data:image/png;base64," + env.PNG_B64;
  const ir = await apiError(c.chat.completions.create({ model: "cloister", max_tokens: 4, temperature: 0, messages: [{ role: "user", content: [
    { type: "text", text: "What does this X-ray show?" }, { type: "image_url", image_url: { url: png } }] }] }));
  if (ir === null) ok("image content part: answered by the enclave");
  else check(ir instanceof OpenAI.APIError && ir.status >= 400 && ir.status < 500 && ir.error?.code === "enclave_error" &&
    /^the enclave answered 4/.test(ir.error?.message),
    "image content part: reached the enclave, whose refusal is relayed in OpenAI's shape", `${ir.status} ${JSON.stringify(ir.error)}`);

  // concurrent requests each get their own client
  const many = await Promise.all([1, 2, 3].map(() => c.chat.completions.create({ model: "cloister", messages: msgs, max_tokens: 24, temperature: 0 })));
  check(many.every((x) => x.choices[0].message.content === env.WANT_GREEDY), "three concurrent requests: the same answers");
}

main().then(() => process.exit(fails ? 1 : 0), (e) => { console.log(`not ok - unexpected: ${e && e.stack}`); process.exit(1); });
