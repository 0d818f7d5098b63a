// Answers constraint questions with npm's `semver` package, for the differential test
// (nats/tests/differential.rs). Reads JSON lines `[range, version]` on stdin and writes one JSON
// line per question: true or false, or null when npm refuses the range.
// The package directory comes from ATTUNE_NPM_SEMVER (scripts/lib.sh installs it).
const semver = require(process.env.ATTUNE_NPM_SEMVER);
const lines = require("fs").readFileSync(0, "utf8").split("\n").filter((l) => l.length > 0);
const out = lines.map((line) => {
  const [range, version] = JSON.parse(line);
  try {
    return JSON.stringify(new semver.Range(range).test(version));
  } catch (e) {
    return "null";
  }
});
process.stdout.write(out.join("\n") + "\n");
