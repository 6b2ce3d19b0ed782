// Validate one .glb with the Khronos glTF validator and print its report as JSON on stdout.
//
// Usage: NODE_PATH=<repo>/tools/node/node_modules node tests/gltf_validate.mjs mesh.glb
// ES `import` ignores NODE_PATH, so the package is loaded through a CommonJS require, which
// honours it. Exit status: 0 when a report was printed (the caller judges its issues), 2 otherwise.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { basename } from "node:path";

const require = createRequire(import.meta.url);

async function main(glbPath) {
  const validator = require("gltf-validator");
  const bytes = new Uint8Array(await readFile(glbPath));
  const report = await validator.validateBytes(bytes, {
    uri: basename(glbPath),
    format: "glb",
    maxIssues: 0, // report every issue, not the first hundred
    writeTimestamp: false,
  });
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
}

if (process.argv.length !== 3) {
  process.stderr.write("usage: node gltf_validate.mjs <file.glb>\n");
  process.exit(2);
}
main(process.argv[2]).catch((error) => {
  process.stderr.write(`gltf_validate: ${error && error.message ? error.message : error}\n`);
  process.exit(2);
});
