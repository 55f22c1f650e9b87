// validate.cjs: the independent check of grammar.sh. Reads "KIND<TAB>SPEC<TAB>OUTPUT"
// lines on stdin (KIND "schema": SPEC a JSON Schema file, the output must parse and
// validate with ajv and ajv-formats; KIND "regex": SPEC a JavaScript regex the whole
// output must match) and prints one "ok - " or "not ok - " line per case.
// ajv comes from tests/node/node_modules, else from $SMOLGATE_AJV_DIR.
const fs = require("fs");
const path = require("path");
function load(name) {
  const dirs = [path.join(__dirname, "../../node/node_modules"), process.env.SMOLGATE_AJV_DIR].filter(Boolean);
  for (const d of dirs) { try { return require(path.join(d, name)); } catch (e) { /* next */ } }
  return null;
}
const Ajv = load("ajv"), addFormats = load("ajv-formats");
if (!Ajv || !addFormats) { console.log("missing ajv"); process.exit(3); }
const ajv = new (Ajv.default || Ajv)({ strict: false, allErrors: true });
(addFormats.default || addFormats)(ajv);
const lines = fs.readFileSync(0, "utf8").split("\n").filter(Boolean);
let bad = 0;
for (const line of lines) {
  const [kind, spec, out] = line.split("\t");
  const text = fs.readFileSync(out, "utf8");
  const name = `${path.basename(spec)} ${path.basename(out)}`;
  if (kind === "regex") {
    const re = new RegExp(fs.readFileSync(spec, "utf8").trim(), "u");
    if (re.test(text)) console.log(`ok - ${name} matches`);
    else { bad++; console.log(`not ok - ${name} does not match: ${JSON.stringify(text).slice(0, 300)}`); }
    continue;
  }
  let v;
  try { v = JSON.parse(text); } catch (e) {
    bad++; console.log(`not ok - ${name} is not JSON (${e.message}): ${JSON.stringify(text).slice(0, 300)}`); continue;
  }
  const validate = ajv.compile(JSON.parse(fs.readFileSync(spec, "utf8")));
  if (validate(v)) console.log(`ok - ${name} validates`);
  else { bad++; console.log(`not ok - ${name} fails its schema: ${ajv.errorsText(validate.errors)}: ${text.slice(0, 300)}`); }
}
process.exit(bad ? 1 : 0);
