// The AWS SDK for JavaScript v3 on the other side of Cloister's S3, SQS and
// DynamoDB backends. Subcommands (endpoints from S3_ENDPOINT, SQS_ENDPOINT,
// DDB_ENDPOINT; BUCKET, TABLE):
//   copy SRC DST        GetObject SRC, PutObject DST (an upload: S3 sends the event)
//   put KEY FILE        PutObject of a file's bytes
//   send QUEUE BODY     SendMessage of a raw body
//   messages QUEUE      the bodies of the queue's messages, one per line (not consumed)
//   results             every result item: {"job_id","status","result_bytes","receipt_bytes"} per line
//   dump                every object, message and item, raw, for the secrecy check
import { S3Client, GetObjectCommand, PutObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { SQSClient, GetQueueUrlCommand, SendMessageCommand, ReceiveMessageCommand, ListQueuesCommand } from "@aws-sdk/client-sqs";
import { DynamoDBClient, ScanCommand } from "@aws-sdk/client-dynamodb";
import { readFileSync } from "node:fs";

const region = process.env.AWS_REGION ?? "us-east-1";
const credentials = { accessKeyId: process.env.AWS_ACCESS_KEY_ID, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY };
const s3 = new S3Client({ region, endpoint: process.env.S3_ENDPOINT, forcePathStyle: true, credentials });
const sqs = new SQSClient({ region, endpoint: process.env.SQS_ENDPOINT, credentials });
const ddb = new DynamoDBClient({ region, endpoint: process.env.DDB_ENDPOINT, credentials });
const Bucket = process.env.BUCKET ?? "jobs", TableName = process.env.TABLE ?? "results";
const out = (s) => process.stdout.write(s + "\n");

const qurl = async (name) => (await sqs.send(new GetQueueUrlCommand({ QueueName: name }))).QueueUrl;
async function peek(url) { // every message body, without consuming (visibility 0), by MessageId
  const seen = new Map();
  for (let round = 0, quiet = 0; round < 40 && quiet < 3; round++) {
    const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, VisibilityTimeout: 0, WaitTimeSeconds: 0 }));
    const before = seen.size;
    for (const m of r.Messages ?? []) seen.set(m.MessageId, m.Body);
    quiet = seen.size === before ? quiet + 1 : 0;
  }
  return [...seen.values()];
}
async function scanAll() {
  const items = [];
  let ExclusiveStartKey;
  do {
    const r = await ddb.send(new ScanCommand({ TableName, ExclusiveStartKey, ConsistentRead: true }));
    items.push(...(r.Items ?? []));
    ExclusiveStartKey = r.LastEvaluatedKey;
  } while (ExclusiveStartKey);
  return items;
}
async function listKeys() {
  const keys = [];
  let ContinuationToken;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket, ContinuationToken }));
    keys.push(...(r.Contents ?? []).map((c) => c.Key));
    ContinuationToken = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (ContinuationToken);
  return keys;
}
const getBytes = async (Key) => Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket, Key }))).Body.transformToByteArray());

const [cmd, a, b] = process.argv.slice(2);
if (cmd === "copy") {
  await s3.send(new PutObjectCommand({ Bucket, Key: b, Body: await getBytes(a) }));
} else if (cmd === "put") {
  await s3.send(new PutObjectCommand({ Bucket, Key: a, Body: readFileSync(b) }));
} else if (cmd === "send") {
  await sqs.send(new SendMessageCommand({ QueueUrl: await qurl(a), MessageBody: b }));
} else if (cmd === "messages") {
  for (const body of await peek(await qurl(a))) out(body);
} else if (cmd === "results") {
  for (const it of await scanAll())
    if (it.kind?.S === "result")
      out(JSON.stringify({ job_id: it.job_id.S, status: it.status.S, result_bytes: it.result.B.length, receipt_bytes: it.receipt.B.length }));
} else if (cmd === "dump") {
  for (const k of await listKeys()) { out(`object ${k}`); out((await getBytes(k)).toString("latin1")); }
  for (const u of (await sqs.send(new ListQueuesCommand({}))).QueueUrls ?? [])
    for (const body of await peek(u)) out(`message ${u}\n${body}`);
  for (const it of await scanAll()) {
    out(`item ${JSON.stringify(it)}`);
    for (const v of Object.values(it)) if (v.B) out(Buffer.from(v.B).toString("latin1"));
  }
} else {
  console.error(`sdk.mjs: unknown command ${cmd}`);
  process.exit(2);
}
