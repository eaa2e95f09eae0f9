#!/usr/bin/env node
// Checks that the "Values" table of docs/deploy.md lists exactly the chart's values with their
// defaults and types.
//
//   node values-doc.mjs CHART_DIR DOC_FILE
//
// A value is a key path of values.yaml; the walk descends into an object only where
// values.schema.json declares it with fixed, required properties (so free-form maps such as
// nodeSelector or resources are one value). A table row looks like
//   | `listen.socket.mode` | string | `"0660"` | Socket permissions ... |
// with the default written as JSON in backticks.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { parse as parseYaml } from "yaml";

const [chartDir, docFile] = process.argv.slice(2);
if (!chartDir || !docFile) {
  console.error("usage: node values-doc.mjs CHART_DIR DOC_FILE");
  process.exit(2);
}
const values = parseYaml(readFileSync(join(chartDir, "values.yaml"), "utf8"), { version: "1.1" });
const schema = JSON.parse(readFileSync(join(chartDir, "values.schema.json"), "utf8"));

const expected = new Map();
function walk(value, node, path) {
  const structured = node && node.properties && Array.isArray(node.required) && node.required.length > 0;
  if (structured && value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) walk(v, node.properties[k], path ? `${path}.${k}` : k);
  } else {
    expected.set(path, value);
  }
}
walk(values, schema, "");

function typeOf(v) {
  if (Array.isArray(v)) return "list";
  if (v === null) return "null";
  if (Number.isInteger(v)) return "int";
  return typeof v === "object" ? "object" : typeof v; // string, boolean, number
}

const doc = readFileSync(docFile, "utf8");
const section = doc.split(/^## /m).find((s) => s.startsWith("Values"));
let failures = 0;
const fail = (msg) => {
  failures++;
  console.log(`    FAIL ${msg}`);
};
if (!section) {
  fail(`${docFile} has no "## Values" section`);
} else {
  const documented = new Map();
  for (const line of section.split("\n")) {
    const m = line.match(/^\|\s*`([^`]+)`\s*\|\s*([^|]+?)\s*\|\s*`(.*?)`\s*\|/);
    if (!m) continue;
    const [, key, type, def] = m;
    if (documented.has(key)) fail(`${key} is documented twice`);
    documented.set(key, { type, def });
  }
  for (const [key, value] of expected) {
    const row = documented.get(key);
    if (!row) {
      fail(`${key} (default ${JSON.stringify(value)}) is missing from the table`);
      continue;
    }
    let def;
    try {
      def = JSON.parse(row.def);
    } catch {
      fail(`${key}: default \`${row.def}\` is not JSON`);
      continue;
    }
    if (!isDeepStrictEqual(def, value)) fail(`${key}: documented default ${row.def}, values.yaml has ${JSON.stringify(value)}`);
    if (row.type !== typeOf(value)) fail(`${key}: documented type ${row.type}, values.yaml has ${typeOf(value)}`);
  }
  for (const key of documented.keys()) {
    if (!expected.has(key)) fail(`${key} is documented but is not a value of the chart`);
  }
  console.log(`values-doc.mjs: ${expected.size} values in values.yaml, ${documented.size} rows in ${docFile}, ${failures} mismatches`);
}
process.exit(failures === 0 ? 0 : 1);
