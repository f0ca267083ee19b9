package dev.lodestream;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.Future;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The Java client (kafka-clients 4.1.1) against a broker, one check per run:
 *
 *   java -cp ... dev.lodestream.JavaClientCheck BOOTSTRAP admin|produce|classic|consumer|transactions
 *
 * Each check creates its own topics, asserts what it reads back and prints "OK <check>: <summary>";
 * any mismatch throws, so the JVM exits non-zero with the reason (compat-tests/test_java_client.py).
 */
public final class JavaClientCheck {
    private static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
    private static final Duration POLL = Duration.ofMillis(200);
    private static final long DEADLINE_MS = 60_000;
    // Replicas of the topics created here: 3 against a cluster (set by compat-tests/conftest.py), else 1.
    private static final short REPLICATION_FACTOR =
            Short.parseShort(System.getenv().getOrDefault("LODESTREAM_COMPAT_REPLICATION_FACTOR", "1"));

    private final String bootstrap;

    private JavaClientCheck(String bootstrap) {
        this.bootstrap = bootstrap;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: JavaClientCheck BOOTSTRAP admin|produce|classic|consumer|transactions");
            System.exit(2);
        }
        JavaClientCheck check = new JavaClientCheck(args[0]);
        String summary = switch (args[1]) {
            case "admin" -> check.adminCheck();
            case "produce" -> check.produceEveryCodec();
            case "classic" -> check.consumeInGroup("classic");
            case "consumer" -> check.consumeInGroup("consumer");
            case "transactions" -> check.consumeTransformProduce();
            default -> throw new IllegalArgumentException("unknown check " + args[1]);
        };
        System.out.println("OK " + args[1] + ": " + summary);
    }

    // -- helpers -----------------------------------------------------------------------------------

    private static void require(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError(what);
        }
    }

    private static String unique(String prefix) {
        return "java-" + prefix + "-" + UUID.randomUUID().toString().substring(0, 8);
    }

    private static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    private static String text(byte[] data) {
        return data == null ? null : new String(data, StandardCharsets.UTF_8);
    }

    private Admin admin() {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        return Admin.create(props);
    }

    private KafkaProducer<byte[], byte[]> producer(Map<String, Object> extra) {
        Map<String, Object> props = new HashMap<>();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        props.putAll(extra);
        return new KafkaProducer<>(props);
    }

    private KafkaConsumer<byte[], byte[]> consumer(Map<String, Object> extra) {
        Map<String, Object> props = new HashMap<>();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.putAll(extra);
        return new KafkaConsumer<>(props);
    }

    private void createTopic(Admin admin, String topic, int partitions) throws Exception {
        admin.createTopics(List.of(new NewTopic(topic, partitions, REPLICATION_FACTOR))).all().get();
    }

    /** Every record of `topic` from the start until `count` arrived (or the deadline passes). */
    private static List<ConsumerRecord<byte[], byte[]>> readAll(KafkaConsumer<byte[], byte[]> consumer, int count) {
        List<ConsumerRecord<byte[], byte[]>> records = new ArrayList<>();
        long deadline = System.currentTimeMillis() + DEADLINE_MS;
        while (records.size() < count) {
            require(System.currentTimeMillis() < deadline, "read " + records.size() + " of " + count + " records");
            consumer.poll(POLL).forEach(records::add);
        }
        return records;
    }

    // -- admin -------------------------------------------------------------------------------------

    private String adminCheck() throws Exception {
        try (Admin admin = admin()) {
            DescribeClusterResult cluster = admin.describeCluster();
            String clusterId = cluster.clusterId().get();
            require(clusterId != null && !clusterId.isEmpty(), "a cluster id");
            // One node, or one per replica against a cluster (as many brokers as a topic's replicas).
            require(cluster.nodes().get().size() == REPLICATION_FACTOR, "one node per replica");
            require(cluster.controller().get() != null, "a controller");

            String topic = unique("admin");
            admin.createTopics(List.of(new NewTopic(topic, 2, REPLICATION_FACTOR)
                    .configs(Map.of("cleanup.policy", "compact", "retention.ms", "3600000")))).all().get();
            require(admin.listTopics().names().get().contains(topic), "the topic listed");
            TopicDescription described = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            require(described.partitions().size() == 2, "2 partitions described");
            require(described.topicId() != null, "a topic id");

            ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            admin.incrementalAlterConfigs(Map.of(resource, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", ""), AlterConfigOp.OpType.DELETE))))
                    .all().get();
            Config config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
            require("7200000".equals(config.get("retention.ms").value()), "retention.ms altered");
            require("delete".equals(config.get("cleanup.policy").value()), "cleanup.policy back to its default");
            require(config.get("cleanup.policy").source() == ConfigEntry.ConfigSource.DEFAULT_CONFIG,
                    "cleanup.policy from the default");

            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all().get();
            require(admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size() == 3,
                    "3 partitions after CreatePartitions");

            // A group with committed offsets: list, describe, list offsets, alter, delete.
            TopicPartition partition = new TopicPartition(topic, 0);
            try (KafkaProducer<byte[], byte[]> producer = producer(Map.of())) {
                for (int i = 0; i < 10; i++) {
                    producer.send(new ProducerRecord<>(topic, 0, bytes("k" + i), bytes("v" + i))).get();
                }
            }
            long latest = admin.listOffsets(Map.of(partition, OffsetSpec.latest())).all().get().get(partition).offset();
            long earliest = admin.listOffsets(Map.of(partition, OffsetSpec.earliest())).all().get().get(partition).offset();
            require(latest == 10 && earliest == 0, "offsets 0..10, got " + earliest + ".." + latest);
            String group = unique("admin-group");
            admin.alterConsumerGroupOffsets(group, Map.of(partition, new OffsetAndMetadata(4))).all().get();
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            require(committed.get(partition).offset() == 4, "offset 4 committed through the admin client");
            Collection<GroupListing> groups = admin.listGroups().all().get();
            require(groups.stream().anyMatch(listing -> listing.groupId().equals(group)), "the group listed");
            ConsumerGroupDescription description = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
            require(description.members().isEmpty(), "no members");
            admin.deleteConsumerGroups(List.of(group)).all().get();
            require(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().isEmpty(),
                    "no offsets after DeleteGroups");

            admin.deleteTopics(List.of(topic)).all().get();
            long deadline = System.currentTimeMillis() + DEADLINE_MS;
            while (admin.listTopics().names().get().contains(topic)) {
                require(System.currentTimeMillis() < deadline, "the topic deleted");
                Thread.sleep(50);  // polling interval
            }
            return "cluster " + clusterId + ", topic created/described/altered/extended/deleted, group offsets";
        }
    }

    // -- produce -----------------------------------------------------------------------------------

    private String produceEveryCodec() throws Exception {
        String topic = unique("produce");
        int perCodec = 2_000;
        try (Admin admin = admin()) {
            createTopic(admin, topic, 1);
        }
        List<String> expected = new ArrayList<>();
        for (String codec : CODECS) {  // idempotent (the default since Kafka 3.0), acks=all
            try (KafkaProducer<byte[], byte[]> producer = producer(Map.of(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec))) {
                Future<RecordMetadata> last = null;
                for (int i = 0; i < perCodec; i++) {
                    String value = codec + "-" + i;
                    List<Header> headers = List.of(new RecordHeader("codec", bytes(codec)),
                            new RecordHeader("empty", new byte[0]));
                    last = producer.send(new ProducerRecord<>(topic, 0, null, bytes("key-" + i), bytes(value),
                            headers));
                    expected.add(value);
                }
                producer.flush();
                long offset = last.get().offset();
                require(offset == expected.size() - 1, codec + ": last offset " + offset);
            }
        }
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(Map.of())) {
            consumer.assign(List.of(new TopicPartition(topic, 0)));
            consumer.seekToBeginning(consumer.assignment());
            List<ConsumerRecord<byte[], byte[]>> records = readAll(consumer, expected.size());
            for (int i = 0; i < expected.size(); i++) {
                ConsumerRecord<byte[], byte[]> record = records.get(i);
                require(record.offset() == i, "offset " + i + " in order, got " + record.offset());
                require(expected.get(i).equals(text(record.value())), "value at " + i + ": " + text(record.value()));
                String codec = expected.get(i).substring(0, expected.get(i).indexOf('-'));
                require(codec.equals(text(record.headers().lastHeader("codec").value())), "codec header at " + i);
                require(record.headers().lastHeader("empty").value().length == 0, "empty header at " + i);
            }
        }
        return expected.size() + " records, " + String.join("/", CODECS) + ", read back in order";
    }

    // -- consumer groups ---------------------------------------------------------------------------

    private String consumeInGroup(String protocol) throws Exception {
        String topic = unique("group-" + protocol);
        int partitions = 3;
        int perPartition = 200;
        try (Admin admin = admin()) {
            createTopic(admin, topic, partitions);
        }
        try (KafkaProducer<byte[], byte[]> producer = producer(Map.of(ProducerConfig.LINGER_MS_CONFIG, 5))) {
            for (int p = 0; p < partitions; p++) {
                for (int i = 0; i < perPartition; i++) {
                    producer.send(new ProducerRecord<>(topic, p, null, bytes(p + ":" + i)));
                }
            }
            producer.flush();
        }
        String group = unique("group");
        Map<String, Object> props = new HashMap<>();
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        Set<String> seen;
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(props)) {
            consumer.subscribe(List.of(topic));
            List<ConsumerRecord<byte[], byte[]>> records = readAll(consumer, partitions * perPartition);
            seen = records.stream().map(record -> text(record.value())).collect(Collectors.toSet());
            require(seen.size() == partitions * perPartition, "each record once, " + seen.size() + " distinct");
            require(consumer.assignment().size() == partitions, "all partitions assigned");
            consumer.commitSync();
            Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(consumer.assignment());
            for (OffsetAndMetadata offset : committed.values()) {
                require(offset != null && offset.offset() == perPartition, "committed " + offset);
            }
        }
        try (Admin admin = admin()) {
            ConsumerGroupDescription described = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
            require(described.type().toString().equalsIgnoreCase(protocol), "group type " + described.type());
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            require(committed.size() == partitions, "committed offsets of every partition");
        }
        return seen.size() + " records over " + partitions + " partitions, group.protocol=" + protocol + ", committed";
    }

    // -- transactions ------------------------------------------------------------------------------

    private String consumeTransformProduce() throws Exception {
        String input = unique("txn-in");
        String output = unique("txn-out");
        int count = 300;
        try (Admin admin = admin()) {
            createTopic(admin, input, 1);
            createTopic(admin, output, 1);
        }
        try (KafkaProducer<byte[], byte[]> producer = producer(Map.of())) {
            for (int i = 0; i < count; i++) {
                producer.send(new ProducerRecord<>(input, 0, null, bytes("record-" + i)));
            }
            producer.flush();
        }
        String group = unique("txn-group");
        Map<String, Object> consumerProps = new HashMap<>();
        consumerProps.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        consumerProps.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        consumerProps.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        consumerProps.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 50);
        int transactions = 0;
        int aborted = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(consumerProps);
             KafkaProducer<byte[], byte[]> producer = producer(Map.of(
                     ProducerConfig.TRANSACTIONAL_ID_CONFIG, unique("txn-id")))) {
            producer.initTransactions();
            consumer.subscribe(List.of(input));
            int transformed = 0;
            long deadline = System.currentTimeMillis() + DEADLINE_MS;
            while (transformed < count) {
                require(System.currentTimeMillis() < deadline, "transformed " + transformed + " of " + count);
                var records = consumer.poll(POLL);
                if (records.isEmpty()) {
                    continue;
                }
                // Every third batch is first written and aborted: none of it may reach a read_committed reader.
                if (transactions % 3 == 1) {
                    producer.beginTransaction();
                    for (ConsumerRecord<byte[], byte[]> record : records) {
                        producer.send(new ProducerRecord<>(output, 0, null, bytes("ABORTED " + text(record.value()))));
                    }
                    producer.flush();
                    producer.abortTransaction();
                    aborted++;
                }
                producer.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (ConsumerRecord<byte[], byte[]> record : records) {
                    producer.send(new ProducerRecord<>(output, 0, null, bytes(text(record.value()).toUpperCase())));
                    offsets.put(new TopicPartition(record.topic(), record.partition()),
                            new OffsetAndMetadata(record.offset() + 1));
                    transformed++;
                }
                producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                producer.commitTransaction();
                transactions++;
            }
        }
        require(aborted > 0, "at least one aborted transaction");
        List<String> committedOutput;
        try (KafkaConsumer<byte[], byte[]> reader = consumer(Map.of(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed"))) {
            reader.assign(List.of(new TopicPartition(output, 0)));
            reader.seekToBeginning(reader.assignment());
            committedOutput = readAll(reader, count).stream().map(record -> text(record.value())).toList();
        }
        List<String> expected = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            expected.add("RECORD-" + i);
        }
        require(committedOutput.equals(expected), "read_committed output is exactly the transformed input, got "
                + committedOutput.subList(0, Math.min(5, committedOutput.size())) + "...");
        try (Admin admin = admin()) {
            OffsetAndMetadata offset = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                    .get(new TopicPartition(input, 0));
            require(offset != null && offset.offset() == count, "the group's offset committed in the transactions");
        }
        try (KafkaConsumer<byte[], byte[]> reader = consumer(Map.of())) {  // read_uncommitted sees the aborted ones
            reader.assign(List.of(new TopicPartition(output, 0)));
            reader.seekToBeginning(reader.assignment());
            long end = reader.endOffsets(reader.assignment()).values().iterator().next();
            long uncommitted = readAllUntil(reader, end).stream()
                    .filter(record -> text(record.value()).startsWith("ABORTED")).count();
            require(uncommitted > 0, "read_uncommitted shows the aborted records");
        }
        return count + " records through " + transactions + " committed and " + aborted
                + " aborted transactions, read_committed exact, offsets committed with the output";
    }

    private static List<ConsumerRecord<byte[], byte[]>> readAllUntil(KafkaConsumer<byte[], byte[]> consumer, long end) {
        List<ConsumerRecord<byte[], byte[]>> records = new ArrayList<>();
        long deadline = System.currentTimeMillis() + DEADLINE_MS;
        TopicPartition partition = consumer.assignment().iterator().next();
        while (consumer.position(partition) < end) {
            require(System.currentTimeMillis() < deadline, "read up to offset " + end);
            consumer.poll(POLL).forEach(records::add);
        }
        return records;
    }
}
