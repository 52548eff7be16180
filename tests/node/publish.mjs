// Publishes events to webhooks.events the way any language may: by the wire contract in
// docs/architecture.md#publishing-events, with kafkajs (pure JavaScript), no hookfleet code.
//
// Input (environment): KAFKA_BOOTSTRAP_SERVERS, HOOKFLEET_TOPIC_PREFIX, and EVENTS: a JSON array of
// {"account_id", "type", "data", "idempotency_key"?}. Output (stdout): one JSON line per event published,
// {"id", "account_id", "partition", "idempotency_key"}, once the broker acknowledged it (acks=all).
import { Kafka, logLevel } from "kafkajs";
import { randomBytes } from "node:crypto";

// librdkafka's default partitioner (consistent_random): crc32(key) % partitions. kafkajs hashes keys with
// murmur2, which would put an account's events on another partition than Python, Go or .NET publishers do.
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const ConsistentPartitioner = () => ({ partitionMetadata, message }) =>
  crc32(Buffer.from(message.key)) % partitionMetadata.length;

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

function eventId() {
  // evt_ + 1-64 letters or digits, unique per event (receivers dedupe on it)
  return "evt_" + Array.from(randomBytes(26), (b) => BASE62[b % 62]).join("");
}

const MAX_EVENT_BYTES = 256 * 1024;

async function main() {
  const topic = `${process.env.HOOKFLEET_TOPIC_PREFIX ?? ""}webhooks.events`;
  const kafka = new Kafka({
    clientId: "node-publisher",
    brokers: process.env.KAFKA_BOOTSTRAP_SERVERS.split(","),
    logLevel: logLevel.ERROR,
  });
  const producer = kafka.producer({
    createPartitioner: ConsistentPartitioner,
    idempotent: true, // with acks=-1 (all): a retried produce is not written twice
    maxInFlightRequests: 1,
  });
  await producer.connect();
  try {
    for (const input of JSON.parse(process.env.EVENTS)) {
      const event = {
        id: eventId(),
        type: input.type,
        created_at: new Date().toISOString(),
        account_id: input.account_id,
        data: input.data,
      };
      const value = Buffer.from(JSON.stringify(event), "utf8");
      if (value.length > MAX_EVENT_BYTES) throw new Error(`event is ${value.length} bytes, above ${MAX_EVENT_BYTES}`);
      const headers = input.idempotency_key ? { "idempotency-key": input.idempotency_key } : {};
      const [sent] = await producer.send({
        topic,
        acks: -1,
        messages: [{ key: event.account_id, value, headers }],
      });
      console.log(
        JSON.stringify({
          id: event.id,
          account_id: event.account_id,
          partition: sent.partition,
          idempotency_key: input.idempotency_key ?? null,
        }),
      );
    }
  } finally {
    await producer.disconnect();
  }
}

main().catch((error) => {
  console.error(`publish failed: ${error.stack ?? error}`);
  process.exit(1);
});
