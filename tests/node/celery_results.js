// celery-node as a stock Celery client of predictq: tests/test_celery_results.py runs this.
// Usage: node celery_results.js REDIS_URL QUEUE MODEL ROW_JSON
// Sends a job that succeeds and one for a model that does not exist, waits for both through
// celery-node's own AsyncResult.get(), and prints one JSON line with what each gave.
"use strict";
const celery = require("celery-node");

async function outcome(result) {
  try {
    return { resolved: await result.get(30000) };
  } catch (err) {
    return { rejected: { message: err.message, code: err.code, exc_type: err.exc_type } };
  }
}

async function main() {
  const [url, queue, model, row] = process.argv.slice(2);
  const client = celery.createClient(url, url, queue);
  const rows = [JSON.parse(row)];
  const good = client.createTask("predictq.predict").applyAsync([], { model, rows });
  const bad = client.createTask("predictq.predict").applyAsync([], { model: "no-such-model", rows });
  const out = { good_id: good.taskId, good: await outcome(good), bad: await outcome(bad) };
  console.log(JSON.stringify(out));
  await client.disconnect();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
