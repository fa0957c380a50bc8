// Files written by `cloister mkmodel` must load in another GGUF reader:
// Hugging Face's @huggingface/gguf parses each one; architecture, tensor
// count and every tensor's byte range are checked against what Cloister
// says about the same file. Usage: node interop.mjs FILE ARCH N_TENSORS [...]
import { gguf } from "@huggingface/gguf";
import { statSync } from "node:fs";

// ggml type id -> [elements per block, bytes per block]
const geom = { 0: [1, 4], 1: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34],
  12: [256, 144], 13: [256, 176], 14: [256, 210], 30: [1, 2] };
let passed = 0, failed = 0;
const check = (c, name) => { if (c) { passed++; console.log(`ok - ${name}`); } else { failed++; console.log(`not ok - ${name}`); } };

const args = process.argv.slice(2);
for (let i = 0; i + 2 < args.length + 1 && i < args.length; i += 3) {
  const [file, arch, count] = [args[i], args[i + 1], Number(args[i + 2])];
  const name = file.split("/").pop();
  let r;
  try {
    r = await gguf(file, { allowLocalFile: true });
  } catch (e) {
    check(false, `${name}: parsed by @huggingface/gguf (${e.message})`);
    continue;
  }
  check(true, `${name}: parsed by @huggingface/gguf (GGUF v${r.metadata.version})`);
  check(r.metadata["general.architecture"] === arch, `${name}: architecture ${arch}`);
  check(r.tensorInfos.length === count, `${name}: ${count} tensors`);
  const size = statSync(file).size;
  let inBounds = true, known = true;
  for (const t of r.tensorInfos) {
    const g = geom[t.dtype];
    if (!g) { known = false; continue; }
    const n = t.shape.reduce((a, b) => a * Number(b), 1);
    const end = Number(r.tensorDataOffset) + Number(t.offset) + (n / g[0]) * g[1];
    if (end > size) inBounds = false;
  }
  check(known, `${name}: every tensor type is a known ggml type`);
  check(inBounds, `${name}: every tensor's bytes lie inside the file`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
