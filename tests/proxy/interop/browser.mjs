// The proxy's web page in a real headless Chromium (puppeteer-core), driven by ../proxy_browser.sh:
// verified panel with PCRs, a streamed answer, an image upload, and the red state against a
// mismatched TRUST.json. Screenshots go to ARTIFACTS.
import puppeteer from "puppeteer-core";
import fs from "node:fs";

const env = process.env;
let fails = 0;
const ok = (m) => console.log(`ok - ${m}`);
const bad = (m) => { fails++; console.log(`not ok - ${m}`); };
const check = (c, m, extra = "") => (c ? ok(m) : bad(`${m} ${extra}`));
const shot = async (page, name) => { const p = `${env.ARTIFACTS}/${name}.png`; await page.screenshot({ path: p, fullPage: true }); console.log(`# screenshot ${p}`); };

const browser = await puppeteer.launch({
  executablePath: env.CHROMIUM, headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--window-size=1366,900"],
  defaultViewport: { width: 1366, height: 900 },
});
try {
  const page = await browser.newPage();
  const cspErrors = [];
  page.on("console", (m) => { if (/Content.Security.Policy|Refused to/i.test(m.text())) cspErrors.push(m.text()); });
  const posted = [];
  page.on("request", (r) => { if (r.method() === "POST") posted.push(r.postData() || ""); });

  const res = await page.goto(env.PROXY_URL + "/", { waitUntil: "load" });
  const csp = res.headers()["content-security-policy"] || "";
  check(/default-src 'none'/.test(csp) && /script-src 'self'/.test(csp) && !/unsafe-inline/.test(csp),
    "the page has a strict Content-Security-Policy", csp);
  await page.waitForSelector("#verdict.ok", { timeout: 15000 });
  const verdict = await page.$eval("#verdict", (e) => e.textContent);
  check(/^Verified/.test(verdict.trim()), "verification panel: green 'Verified'", verdict);
  const factsText = await page.$eval("#facts", (e) => e.textContent);
  check(factsText.includes(env.PCR0) && factsText.includes(env.PCR2) && factsText.includes(env.MODEL_SHA256),
    "verification panel shows the attested PCRs and model digest");
  const matched = await page.$$eval("dd.match", (l) => l.length);
  const mismatched = await page.$$eval("dd.mismatch", (l) => l.length);
  check(matched >= 4 && mismatched === 0, "every shown pin matched", `${matched} ${mismatched}`);
  // accessibility basics: every control has a label, the answer area is a live region
  const unlabeled = await page.$$eval("input, textarea", (l) => l.filter((e) => !e.labels || e.labels.length === 0).map((e) => e.id));
  check(unlabeled.length === 0, "every input has a label", unlabeled.join(","));
  check(await page.$eval("#answer-live", (e) => e.getAttribute("aria-live")) === "polite", "answers go to an aria-live region");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
  check(focused === "question", "keyboard: Tab reaches the question box", focused);
  await shot(page, "verified");

  // a question, answered as a stream
  await page.click("details summary");
  await page.$eval("#max-tokens", (e) => { e.value = "24"; });
  // record, inside the page, every length the answer takes as pieces arrive
  await page.evaluate(() => {
    window.__lens = [];
    new MutationObserver(() => {
      const a = document.querySelectorAll("#log li.assistant .text");
      const n = a.length ? a[a.length - 1].textContent.length : 0;
      if (window.__lens[window.__lens.length - 1] !== n) window.__lens.push(n);
    }).observe(document.getElementById("log"), { subtree: true, childList: true, characterData: true });
  });
  await page.type("#question", env.Q);
  await page.keyboard.down("Control"); await page.keyboard.press("Enter"); await page.keyboard.up("Control");
  await page.waitForFunction(() => /^(Answered\.|\d{3}:)/.test(document.getElementById("status").textContent), { timeout: 20000 });
  const lengths = await page.evaluate(() => window.__lens);
  const answer = await page.$eval("#log", (e) => { const a = e.querySelectorAll("li.assistant .text"); return a.length ? a[a.length - 1].textContent : ""; });
  console.log(`# answer lengths seen while streaming: ${lengths.join(" ")}`);
  check(answer === env.WANT_GREEDY, "the page's answer equals cloister run", `'${answer}' vs '${env.WANT_GREEDY}'`);
  const liveText = await page.$eval("#answer-live", (e) => e.textContent);
  check(liveText === env.WANT_GREEDY, "the live region received the answer");
  await shot(page, "answer");
  // a longer answer, watched as it grows
  await page.$eval("#max-tokens", (e) => { e.value = "300"; });
  await page.evaluate(() => { window.__lens = []; });
  await page.type("#question", "And then?");
  await page.click("#send");
  await page.waitForFunction(() => /^(Answered\.|\d{3}:)/.test(document.getElementById("status").textContent), { timeout: 30000 });
  const grew = await page.evaluate(() => window.__lens.filter((n) => n > 0));
  const pieces = await page.$eval("#log", (e) => { const a = e.querySelectorAll("li.assistant"); return Number(a[a.length - 1].dataset.pieces); });
  console.log(`# 300-token answer: ${pieces} pieces, ${grew.length} lengths seen while streaming`);
  check(pieces >= 100, "the page received the answer as a stream of pieces", `${pieces}`);
  check(grew.length >= 3, "the answer appeared piece by piece", grew.join(" "));
  await page.$eval("#max-tokens", (e) => { e.value = "24"; });

  // an image: chosen with the file input, previewed, sent as an image_url data: URL part
  const input = await page.$("#image");
  await input.uploadFile(env.PNG_FILE);
  await page.waitForSelector("#preview-box:not([hidden])", { timeout: 5000 });
  const src = await page.$eval("#preview", (e) => e.src);
  check(src.startsWith("data:image/png;base64,"), "the image is previewed");
  await shot(page, "image-preview");
  await page.type("#question", "What does this X-ray show?");
  await page.click("#send");
  await page.waitForFunction(() => /^(Answered\.|\d{3}:)/.test(document.getElementById("status").textContent), { timeout: 20000 });
  const last = posted[posted.length - 1] || "";
  let sent = null;
  try { sent = JSON.parse(last); } catch { /* checked below */ }
  const parts = sent && sent.messages[sent.messages.length - 1].content;
  check(Array.isArray(parts) && parts[0].type === "image_url" && parts[0].image_url.url.startsWith("data:image/png;base64,") &&
    parts[1].type === "text",
    "the image went out as an image_url data: URL part");
  const outcome = await page.$eval("#status", (e) => e.textContent);
  check(outcome === "Answered." || /^4\d\d: the enclave answered/.test(outcome),
    "the enclave answered, or its refusal of images is shown", outcome);
  await shot(page, "image-sent");
  // drag and drop onto the question area: previewed; Remove takes it away again
  const b64 = fs.readFileSync(env.PNG_FILE).toString("base64");
  await page.evaluate((data) => {
    const bytes = Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], "dropped-xray.png", { type: "image/png" }));
    const target = document.getElementById("drop");
    target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
    target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, b64);
  await page.waitForSelector("#preview-box:not([hidden])", { timeout: 5000 });
  check((await page.$eval("#preview-name", (e) => e.textContent)) === "dropped-xray.png", "a dropped image is previewed");
  await page.click("#remove-image");
  check(await page.$eval("#preview-box", (e) => e.hidden && getComputedStyle(e).display === "none"), "Remove image hides the preview");
  check(cspErrors.length === 0, "no Content-Security-Policy violations", cspErrors.join(" | "));

  // a proxy whose TRUST.json does not match: red, naming the check
  const p2 = await browser.newPage();
  await p2.goto(env.PROXY_BAD_URL + "/", { waitUntil: "load" });
  await p2.waitForSelector("#verdict.bad", { timeout: 15000 });
  const red = await p2.$eval("#verdict", (e) => e.textContent);
  check(/NOT verified/.test(red) && new RegExp(env.BAD_CHECK).test(red), "mismatched TRUST.json: red, naming the failing check", red);
  await p2.type("#question", "Hello");
  await p2.click("#send");
  await p2.waitForSelector("#log li.error", { timeout: 15000 });
  const err = await p2.$eval("#log li.error", (e) => e.textContent);
  check(/^Error502: attestation refused/.test(err), "a question to it is refused in the page", err);
  await shot(p2, "refused");
} finally {
  await browser.close();
}
fs.writeFileSync(`${env.ARTIFACTS}/result.txt`, fails ? "failed\n" : "passed\n");
process.exit(fails ? 1 : 0);
