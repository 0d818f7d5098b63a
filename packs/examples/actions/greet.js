// Greet someone; parameters arrive as JSON on stdin.
const greetings = { en: "Hello", fr: "Bonjour", de: "Hallo" };
let input = "";
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", () => {
  const { name, language } = JSON.parse(input);
  console.log(JSON.stringify({ greeting: `${greetings[language]}, ${name}!`, node_version: process.versions.node }));
});
