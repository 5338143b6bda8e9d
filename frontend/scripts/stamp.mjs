// After `vite build`: record in the build which sources it was built from, so a unit test
// (tests/unit/dashboard/test_static_build.py, no npm needed) fails when the committed
// build is older than frontend/. The digest: sha256 over, for each source file in sorted
// order of its path relative to frontend/, "path\0" + sha256(content) hex + "\n".
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
export const SOURCES = ["index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts", "public", "src", "scripts"];

function walk(path, out) {
  if (statSync(path).isDirectory()) for (const name of readdirSync(path)) walk(join(path, name), out);
  else out.push(relative(root, path).split(sep).join("/"));
  return out;
}

const files = SOURCES.flatMap((s) => walk(join(root, s), [])).sort();
const digest = createHash("sha256");
for (const f of files) digest.update(`${f}\0${createHash("sha256").update(readFileSync(join(root, f))).digest("hex")}\n`);
const out = join(root, "..", "src", "hutch", "dashboard", "static", "build.json");
writeFileSync(out, JSON.stringify({ sourceDigest: digest.digest("hex"), sources: files.length }, null, 2) + "\n");
console.log(`stamped ${out}`);
