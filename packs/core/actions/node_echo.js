// Echo the JSON parameters received on stdin, with the node version that ran them.
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const params = input ? JSON.parse(input) : {};
  console.log(JSON.stringify({ ...params, node_version: process.versions.node }));
});
