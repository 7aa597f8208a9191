// Runs a WASI preview1 command module under Node's built-in WASI (a second, independent engine
// for checking the samples; the node agent uses wasmtime).
//
//   node --no-warnings wasi-run.mjs MODULE [--env K=V]... [--dir GUEST=HOST]... [--] ARGS...
//
// Exits with the guest's exit code, or 134 after a trap (the message goes to stderr).
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const argv = process.argv.slice(2);
const wasm = argv.shift();
const env = {};
const preopens = {};
const args = [wasm.split('/').pop().replace(/\.wasm$/, '')];
while (argv.length > 0) {
  const arg = argv.shift();
  if (arg === '--env') {
    const [key, ...value] = argv.shift().split('=');
    env[key] = value.join('=');
  } else if (arg === '--dir') {
    const [guest, host] = argv.shift().split('=');
    preopens[guest] = host;
  } else if (arg === '--') {
    args.push(...argv.splice(0));
  } else {
    args.push(arg);
  }
}

const wasi = new WASI({ version: 'preview1', args, env, preopens, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(wasm));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
let code;
try {
  code = wasi.start(instance);
} catch (err) {
  process.stderr.write(`wasi-run: trap: ${err.message}\n`);
  code = 134;
}
process.exitCode = code;
