// Attune's node launcher: a node process started ahead of an invocation, with the pack's
// preload modules required, that waits on its stdin for the one script it will run.
//
// The runner starts it as `<node> <interpreter args> launcher.js <module>...` with the
// environment and working directory a cold start of the same pack would get (minus the
// per-invocation ATTUNE_* variables) and its stdout and stderr already those of the coming
// invocation. On stdin it writes a 4-byte big-endian length, then a JSON job:
//   {"script": "...", "env": [[k, v], ...], "cwd": "...", "stdin": true|false}
// and then (when "stdin" is true) the parameters, which the script reads as a cold one would.
'use strict';
const fs = require('fs');
const Module = require('module');

for (const name of process.argv.slice(2)) {
  try {
    require(require.resolve(name, { paths: [process.cwd()] }));
  } catch (e) {
    process.stderr.write(`attune: cannot preload ${name}: ${e.message}\n`);
    process.exit(3);
  }
}

function readExactly(n) {
  const buf = Buffer.alloc(n);
  let off = 0;
  while (off < n) {
    let got;
    try {
      got = fs.readSync(0, buf, off, n - off, null);
    } catch (e) {
      if (e.code === 'EAGAIN') continue;
      throw e;
    }
    // The runner let go of this process before using it.
    if (got === 0) process.exit(0);
    off += got;
  }
  return buf;
}

// What was added to the environment on the way to this process (PWD, by a wrapper script):
// the job's environment has the same start-up part, so these are the names it lacks, and a
// cold start through the same wrapper would have them too.
const startup = Object.assign({}, process.env);
const job = JSON.parse(readExactly(readExactly(4).readUInt32BE(0)).toString('utf8'));
process.chdir(job.cwd);
for (const k of Object.keys(process.env)) delete process.env[k];
for (const [k, v] of job.env) process.env[k] = v;
for (const [k, v] of Object.entries(startup)) if (!(k in process.env)) process.env[k] = v;
process.argv.length = 1;
process.argv.push(job.script);
Module.runMain();
