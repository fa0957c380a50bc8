// Cloister proxy chat page: streamed answers (fetch + ReadableStream over server-sent events),
// image attachments as data: URLs, and the verification panel from /v1/attestation.
// No inline handlers, no external assets: the page's CSP allows only this origin.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const log = $("log"), form = $("ask"), q = $("question"), send = $("send"), stop = $("stop");
  const statusEl = $("status"), live = $("answer-live");
  const history = [];
  let image = null; // {url, name}
  let controller = null;
  let model = "cloister";

  const headers = (json) => {
    const h = json ? { "Content-Type": "application/json" } : {};
    const t = $("token").value.trim();
    if (t) h.Authorization = "Bearer " + t;
    return h;
  };
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
  const addEntry = (role, text) => {
    const li = el("li", role);
    li.appendChild(el("span", "role", role === "user" ? "You" : role === "assistant" ? "Answer" : "Error"));
    const body = el("span", "text", text);
    li.appendChild(body);
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
    return { li, body };
  };

  // ---- image attachment ----
  const MAX_IMAGE = 6 * 1024 * 1024;
  const setImage = (file) => {
    if (!file) return;
    if (!/^image\/(png|jpeg|webp|gif)$/.test(file.type)) { statusEl.textContent = "Only PNG, JPEG, WebP or GIF images."; return; }
    if (file.size > MAX_IMAGE) { statusEl.textContent = "The image is larger than 6 MB."; return; }
    const r = new FileReader();
    r.onload = () => {
      image = { url: r.result, name: file.name };
      $("preview").src = image.url;
      $("preview-name").textContent = file.name;
      $("preview-box").hidden = false;
      statusEl.textContent = "Image attached: " + file.name;
    };
    r.readAsDataURL(file);
  };
  const clearImage = () => { image = null; $("image").value = ""; $("preview-box").hidden = true; $("preview").removeAttribute("src"); };
  $("image").addEventListener("change", (e) => setImage(e.target.files[0]));
  $("remove-image").addEventListener("click", () => { clearImage(); statusEl.textContent = "Image removed."; $("image").focus(); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files.length) setImage(e.dataTransfer.files[0]); });

  // ---- chat ----
  const errorText = async (res) => {
    try { const j = await res.json(); return `${res.status}: ${j.error.message}`; } catch { return `HTTP ${res.status}`; }
  };
  q.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); } });
  stop.addEventListener("click", () => controller && controller.abort());
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = q.value.trim();
    if (!text && !image) { statusEl.textContent = "Type a question first."; q.focus(); return; }
    // the image before the text, as `cloister ask --image` sends it
    const content = image ? [{ type: "image_url", image_url: { url: image.url } }, { type: "text", text }] : text;
    const u = addEntry("user", text);
    if (image) { const im = el("img"); im.src = image.url; im.alt = "Attached image " + image.name; u.li.appendChild(im); }
    history.push({ role: "user", content });
    q.value = ""; clearImage();
    const a = addEntry("assistant", "");
    send.disabled = true; stop.disabled = false; statusEl.textContent = "Waiting for the enclave\u2026"; live.textContent = "";
    controller = new AbortController();
    let answer = "";
    try {
      const res = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers(true), signal: controller.signal,
        body: JSON.stringify({ model, messages: history, stream: true,
          max_tokens: Number($("max-tokens").value) || 256, temperature: Number($("temperature").value) || 0 }),
      });
      if (!res.ok) throw new Error(await errorText(res));
      statusEl.textContent = "Answering\u2026";
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "", done = false;
      while (!done) {
        const r = await reader.read();
        if (r.done) break;
        buf += r.value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = ev.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data) continue;
          if (data === "[DONE]") { done = true; break; }
          const j = JSON.parse(data);
          if (j.error) throw new Error(j.error.message);
          const piece = j.choices?.[0]?.delta?.content;
          if (piece) {
            answer += piece; a.body.textContent = answer; live.textContent += piece; log.scrollTop = log.scrollHeight;
            a.li.dataset.pieces = String(Number(a.li.dataset.pieces || 0) + 1);
          }
        }
      }
      if (!done) throw new Error("the answer stream ended early");
      history.push({ role: "assistant", content: answer });
      statusEl.textContent = "Answered.";
    } catch (err) {
      history.pop();
      if (!answer) a.li.remove();
      const msg = err.name === "AbortError" ? "Stopped." : String(err.message || err);
      addEntry("error", msg);
      statusEl.textContent = msg;
      refresh();
    } finally {
      send.disabled = false; stop.disabled = true; controller = null; q.focus();
    }
  });

  // ---- verification panel ----
  const facts = $("facts"), verdict = $("verdict"), vtext = $("verdict-text");
  const fact = (k, v, cls) => { facts.appendChild(el("dt", null, k)); const d = el("dd", cls, v); facts.appendChild(d); };
  async function refresh() {
    try {
      const res = await fetch("/v1/attestation", { headers: headers(false) });
      if (!res.ok) throw new Error(await errorText(res));
      const a = await res.json();
      facts.replaceChildren();
      if (a.ok) {
        verdict.className = "verdict ok";
        vtext.textContent = "Verified: every pin in TRUST.json matched (" + a.checks.join(", ") + ")";
        fact("Attested at", a.attested.timestamp);
        fact("Enclave", a.attested.module_id + (a.attested.debug ? " (DEBUG MODE)" : ""));
        // the pinned PCRs, and any other that is not all zeros
        for (const [i, v] of Object.entries(a.attested.pcrs)) {
          const pinned = a.trust.pcrs[i];
          if (!pinned && /^0+$/.test(v)) continue;
          fact("PCR" + i, v, pinned ? (pinned === v ? "match" : "mismatch") : undefined);
        }
        fact("Model SHA-256", a.attested.model_sha256, "match");
        if (a.attested.mmproj_sha256) fact("Vision projector SHA-256", a.attested.mmproj_sha256, a.trust.mmproj_sha256 ? "match" : undefined);
        fact("Key", a.attested.kms_key_arn || "(none)", a.trust.kms ? "match" : undefined);
        fact("Key service", a.attested.kms_endpoint || "(none)", a.trust.kms && a.trust.kms.endpoint ? "match" : undefined);
        fact("Configuration SHA-256", a.attested.config_sha256, a.trust.config_sha256 ? "match" : undefined);
      } else {
        verdict.className = a.checked ? "verdict bad" : "verdict pending";
        vtext.textContent = a.checked ? "NOT verified: " + a.failure.check + ": " + a.failure.message + ". Nothing is sent to this enclave."
                                     : "Not checked yet.";
        for (const [i, v] of Object.entries(a.trust.pcrs)) fact("Expected PCR" + i, v);
        fact("Expected model SHA-256", a.trust.model_sha256);
        if (a.trust.mmproj_sha256) fact("Expected vision projector SHA-256", a.trust.mmproj_sha256);
      }
      fact("Root certificate SHA-256", a.trust.root_sha256);
      fact("Last check", a.checked_at || "never");
    } catch (err) {
      verdict.className = "verdict bad";
      vtext.textContent = "Cannot read the verification: " + (err.message || err);
    }
  }
  $("refresh").addEventListener("click", refresh);
  fetch("/v1/models", { headers: headers(false) }).then((r) => r.ok ? r.json() : null).then((j) => { if (j && j.data[0]) model = j.data[0].id; }).catch(() => {});
  refresh();
})();
