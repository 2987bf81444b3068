// Parses and validates an AsyncAPI document with the official parser (@asyncapi/parser):
// the AsyncAPI JSON schema of its version, references, and the parser's own rules.
// Prints one JSON line {"version", "errors": [...], "warnings": [...], "channels": [...],
// "operations": [...], "messages": [...]}; exit 0 either way (the test reads it).
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"), { source: path });
const errors = diagnostics.filter((d) => d.severity === 0).map((d) => `${d.path.join("/")}: ${d.message}`);
const warnings = diagnostics.filter((d) => d.severity === 1).map((d) => `${d.path.join("/")}: ${d.message}`);
const result = { version: document?.version() ?? null, errors, warnings, channels: [], operations: [], messages: [] };
if (document) {
  for (const channel of document.channels()) result.channels.push({ id: channel.id(), address: channel.address() });
  for (const op of document.operations()) result.operations.push({ id: op.id(), action: op.action() });
  for (const message of document.allMessages()) result.messages.push(message.id());
}
console.log(JSON.stringify(result));
