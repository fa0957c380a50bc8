// Starts the third-party AWS stand-ins on 127.0.0.1 (ports chosen by the OS):
// s3rver (S3), fauxqs (SQS), dynalite (DynamoDB). Creates the bucket, the
// queues and the results table with the AWS SDK v3, and plays S3's event
// notification: each ObjectCreated event s3rver emits for a key under
// EVENT_PREFIX is sent, as S3 would, as the S3 event JSON into the queue.
// Prints one JSON line with the endpoints, then runs until stdin closes.
import { createRequire } from "node:module";
import { S3Client, CreateBucketCommand } from "@aws-sdk/client-s3";
import { SQSClient, CreateQueueCommand, GetQueueUrlCommand, SendMessageCommand } from "@aws-sdk/client-sqs";
import { DynamoDBClient, CreateTableCommand, DescribeTableCommand } from "@aws-sdk/client-dynamodb";
import { startFauxqs } from "fauxqs";

const require = createRequire(import.meta.url);
const S3rver = require("s3rver");
const { DUMMY_ACCOUNT } = require("s3rver/lib/models/account");
const dynalite = require("dynalite");

const env = (k, d) => process.env[k] ?? d;
const bucket = env("BUCKET", "jobs"), queue = env("QUEUE", "jobs"), table = env("TABLE", "results");
const extraQueues = env("EXTRA_QUEUES", "").split(",").filter(Boolean);
const eventPrefix = env("EVENT_PREFIX", "inbox/");
const region = env("AWS_REGION", "us-east-1");
// s3rver refuses access keys it does not know: register the test's keys.
for (const pair of env("S3_KEYS", "").split(",").filter(Boolean)) {
  const [ak, sk] = pair.split(":");
  DUMMY_ACCOUNT.createKeyPair(ak, sk);
}
const creds = { accessKeyId: env("AWS_ACCESS_KEY_ID", "S3RVER"), secretAccessKey: env("AWS_SECRET_ACCESS_KEY", "S3RVER") };

const s3srv = new S3rver({ address: "127.0.0.1", port: 0, silent: true, directory: env("S3_DIR", "/tmp/s3rver") });
const s3addr = await s3srv.run();
const s3url = `http://127.0.0.1:${s3addr.port}`;
const fq = await startFauxqs({ port: 0, host: "127.0.0.1", logger: false });
const sqsurl = `http://127.0.0.1:${fq.port}`;
const ddbsrv = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
await new Promise((res, rej) => ddbsrv.listen(0, "127.0.0.1", (e) => (e ? rej(e) : res())));
const ddburl = `http://127.0.0.1:${ddbsrv.address().port}`;

const s3 = new S3Client({ region, endpoint: s3url, forcePathStyle: true, credentials: creds });
const sqs = new SQSClient({ region, endpoint: sqsurl, credentials: creds });
const ddb = new DynamoDBClient({ region, endpoint: ddburl, credentials: creds });
await s3.send(new CreateBucketCommand({ Bucket: bucket }));
for (const q of [queue, `${queue}-dlq`, ...extraQueues]) await sqs.send(new CreateQueueCommand({ QueueName: q }));
const qurl = (await sqs.send(new GetQueueUrlCommand({ QueueName: queue }))).QueueUrl;
await ddb.send(new CreateTableCommand({
  TableName: table, BillingMode: "PAY_PER_REQUEST",
  AttributeDefinitions: [{ AttributeName: "job_id", AttributeType: "S" }],
  KeySchema: [{ AttributeName: "job_id", KeyType: "HASH" }],
}));
for (let i = 0; i < 100; i++) {
  const t = await ddb.send(new DescribeTableCommand({ TableName: table }));
  if (t.Table.TableStatus === "ACTIVE") break;
  await new Promise((r) => setTimeout(r, 50));
}

// S3 -> SQS event notification (s3rver emits the event; S3 would send it).
// Keys in S3 events are form-encoded.
const encodeKey = (k) => encodeURIComponent(k).replace(/%20/g, "+").replace(/%2F/g, "/");
let relayed = 0;
s3srv.on("event", async (ev) => {
  try {
    const rec = ev.Records[0];
    if (!rec.eventName.startsWith("ObjectCreated:") || !rec.s3.object.key.startsWith(eventPrefix)) return;
    rec.s3.object.key = encodeKey(rec.s3.object.key);
    await sqs.send(new SendMessageCommand({ QueueUrl: qurl, MessageBody: JSON.stringify(ev) }));
    relayed++;
  } catch (e) {
    console.error("relay failed:", e);
  }
});

console.log(JSON.stringify({ s3: s3url, sqs: sqsurl, dynamodb: ddburl }));
process.stdin.resume();
const stop = async () => {
  console.error(`servers: ${relayed} S3 events relayed`);
  await Promise.allSettled([s3srv.close(), fq.stop(), new Promise((r) => ddbsrv.close(r))]);
  process.exit(0);
};
process.stdin.on("end", stop);
process.on("SIGTERM", stop);
