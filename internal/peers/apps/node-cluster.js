// A Node.js cluster, as lbbench runs it: the primary forks WORKERS
// workers that all listen on HOST:PORT. Under NODE_CLUSTER_SCHED_POLICY=rr
// (Linux's default) the primary accepts and hands each connection to a
// worker in turn; under "none" the workers accept on the shared socket.
//
// Environment: LBBENCH_ADDR (HOST:PORT), LBBENCH_WORKERS, LBBENCH_WORK_US
// (CPU burnt per request, spinning on the monotonic clock), LBBENCH_LOG
// (if set: every worker appends its pid to this file per request, the
// ground truth of who served). Each worker writes its pid and a newline
// on stdout once it serves; SIGTERM stops the workers, then the primary.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const fs = require('node:fs');

const addr = process.env.LBBENCH_ADDR;
const colon = addr.lastIndexOf(':');
const host = addr.slice(0, colon).replace(/^\[|\]$/g, '');
const port = Number(addr.slice(colon + 1));
const workers = Number(process.env.LBBENCH_WORKERS || 1);
const workNs = BigInt(Math.round(Number(process.env.LBBENCH_WORK_US || 0) * 1000));

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  let stopping = false;
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  cluster.on('exit', (w, code, signal) => {
    if (!stopping) {
      // A worker that dies on its own is a failed run, not a restart.
      console.error(`worker ${w.process.pid} exited (${signal || code})`);
      stop();
      process.exitCode = 1;
    }
    if (Object.keys(cluster.workers).length === 0) process.exit();
  });
} else {
  const pid = String(process.pid);
  const log = process.env.LBBENCH_LOG ? fs.openSync(process.env.LBBENCH_LOG, 'a') : -1;
  const line = Buffer.from(pid + '\n');
  const server = http.createServer((req, res) => {
    if (workNs > 0n) {
      const stop = process.hrtime.bigint() + workNs;
      while (process.hrtime.bigint() < stop);
    }
    if (log >= 0) fs.writeSync(log, line);
    res.writeHead(200, { 'X-Worker-Pid': pid, 'Content-Type': 'text/plain', 'Content-Length': 3 });
    res.end('ok\n');
  });
  server.keepAliveTimeout = 0; // loadgen decides when a connection ends
  server.listen(port, host, 511, () => process.stdout.write(line));
  process.on('SIGTERM', () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
