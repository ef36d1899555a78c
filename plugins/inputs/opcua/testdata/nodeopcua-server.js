// A node-opcua line server for the opcua source's tests.
//
//   node nodeopcua-server.js PORT DIR [SHIFT] [BUMP]
//
// DIR keeps the server's PKI (so a restarted server presents the same
// certificate) and counter.txt, the good counter, written with fsync on
// every increment so a restarted server goes on from the same value.
// SHIFT registers that many other namespaces before urn:plantgate:line,
// so its index changes between runs. BUMP adds that many parts at start
// (parts made while the server was down). The counter goes up by one
// every 100 ms until the file DIR/pause exists. Prints "ready" when
// listening.
const fs = require("fs");
const path = require("path");
const { OPCUAServer, OPCUACertificateManager, SecurityPolicy, MessageSecurityMode, Variant, DataType } = require("node-opcua");

const port = parseInt(process.argv[2], 10);
const dir = process.argv[3];
const shift = parseInt(process.argv[4] || "0", 10);
const bump = parseInt(process.argv[5] || "0", 10);
const counterFile = path.join(dir, "counter.txt");

function saveCounter(v) {
  const tmp = counterFile + ".tmp";
  const fd = fs.openSync(tmp, "w");
  fs.writeSync(fd, String(v));
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, counterFile);
}

(async () => {
  let good = 1000;
  try { good = parseInt(fs.readFileSync(counterFile, "utf8"), 10); } catch (e) { }
  good += bump;
  saveCounter(good);
  const cm = new OPCUACertificateManager({ rootFolder: path.join(dir, "pki"), automaticallyAcceptUnknownCertificate: true });
  await cm.initialize();
  const server = new OPCUAServer({
    port, hostname: "127.0.0.1", resourcePath: "/UA/Line", serverCertificateManager: cm,
    securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
    allowAnonymous: true,
    serverCapabilities: { maxSessions: 20 },
  });
  await server.initialize();
  const as = server.engine.addressSpace;
  for (let i = 0; i < shift; i++) as.registerNamespace("urn:plantgate:test:other:" + i);
  const ns = as.registerNamespace("urn:plantgate:line");
  const dev = ns.addObject({ organizedBy: as.rootFolder.objects, browseName: "Line3" });
  const counter = ns.addVariable({ componentOf: dev, nodeId: "s=Line3.GoodCount", browseName: "GoodCount", dataType: "UInt32",
    value: new Variant({ dataType: DataType.UInt32, value: good }) });
  ns.addVariable({ componentOf: dev, nodeId: "s=Line3.Order", browseName: "Order", dataType: "String",
    value: new Variant({ dataType: DataType.String, value: "P000777" }) });
  setInterval(() => {
    if (fs.existsSync(path.join(dir, "pause"))) return;
    good++;
    saveCounter(good);
    counter.setValueFromSource(new Variant({ dataType: DataType.UInt32, value: good }));
  }, 100);
  await server.start();
  console.log("ready " + ns.index);
})().catch((e) => { console.error(e); process.exit(1); });
